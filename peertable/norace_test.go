//go:build !race

package peertable

const raceEnabled = false
