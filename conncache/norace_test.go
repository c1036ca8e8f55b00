//go:build !race

package conncache

const raceEnabled = false
