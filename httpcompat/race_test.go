//go:build race

package httpcompat

const raceEnabled = true
