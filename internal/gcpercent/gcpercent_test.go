package gcpercent

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestDefault(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "300")
	if Default(25) {
		t.Error("Default(25) with GOGC set = true, want false")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, percent = %d, want it untouched (100)", got)
	}

	// Unset, as t.Setenv cannot do: it restores the variable afterwards.
	t.Setenv("GOGC", "")
	if err := os.Unsetenv("GOGC"); err != nil {
		t.Fatal(err)
	}
	if !Default(25) {
		t.Error("Default(25) without GOGC = false, want true")
	}
	if got := debug.SetGCPercent(100); got != 25 {
		t.Errorf("without GOGC, percent = %d, want 25", got)
	}
}
