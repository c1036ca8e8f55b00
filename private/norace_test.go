//go:build !race

package private

const raceEnabled = false
