//go:build race

package conncache

const raceEnabled = true
