//go:build !race

package flush

const rulesRace = false
