//go:build race

package private

const raceEnabled = true
