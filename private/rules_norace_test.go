//go:build !race

package private

const rulesRace = false
