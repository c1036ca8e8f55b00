//go:build race

package peertable

// raceEnabled reports whether the race detector is on: it adds
// allocations and slows everything, so allocation tests skip and stress
// tests do less.
const raceEnabled = true
