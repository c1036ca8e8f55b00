package flush

import (
	"log/slog"
	"testing"
	"time"

	"github.com/chihaya/chihaya/internal/testenv"
)

func TestNextBackoff(t *testing.T) {
	c := Config{Interval: 5 * time.Second, MaxBackoff: 10 * time.Second}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	b := time.Duration(0)
	for range 6 {
		b = c.nextBackoff(b)
		got = append(got, b)
		if w := jitter(b); w < b/2 || w > b {
			t.Errorf("jitter(%v) = %v, want %v to %v", b, w, b/2, b)
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("backoffs = %v, want %v", got, want)
			break
		}
	}
}

func testLogger() (*slog.Logger, *testenv.LogBuffer) {
	var buf testenv.LogBuffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h), &buf
}
