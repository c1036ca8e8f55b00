package flush

import (
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type memDriver struct{ s *memStore }

func (d memDriver) Open(cfg StoreConfig) (Store, error) { return d.s, nil }

func TestRegistry(t *testing.T) {
	if _, err := Open("nosuch", StoreConfig{}); err == nil || !strings.Contains(err.Error(), `"nosuch"`) || !strings.Contains(err.Error(), "known:") {
		t.Errorf(`Open("nosuch") = %v, want an error naming it and the known drivers`, err)
	}
	if !slices.Contains(Drivers(), "mem-test") { // -count > 1 runs this again
		Register("mem-test", memDriver{newMemStore()})
	}
	if _, err := Open("nosuch", StoreConfig{}); err == nil || !strings.Contains(err.Error(), "mem-test") {
		t.Errorf(`Open("nosuch") = %v, want an error listing mem-test`, err)
	}
	s, err := Open("mem-test", StoreConfig{DSN: "mem", MigrateAtStart: true})
	if err != nil || s == nil {
		t.Errorf(`Open("mem-test") = %v, %v; want a store`, s, err)
	}
	for name, d := range map[string]Driver{"mem-test": memDriver{}, "nil": nil} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q, %v) did not panic", name, d)
				}
			}()
			Register(name, d)
		}()
	}
}

func TestFlusherConfigDefaults(t *testing.T) {
	var c FlusherConfig
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Interval != 5*time.Second || c.StaleAfter != 30*time.Second || c.ShutdownTimeout != 10*time.Second ||
		c.MaxBackoff != time.Minute || c.Timeout != 30*time.Second {
		t.Errorf("defaults = %+v", c)
	}
	bad := []struct {
		c     FlusherConfig
		field string
	}{
		{FlusherConfig{Interval: time.Millisecond}, "Interval"},
		{FlusherConfig{Interval: -1}, "Interval"},
		{FlusherConfig{Interval: 10 * time.Second, StaleAfter: 15 * time.Second}, "StaleAfter"},
		{FlusherConfig{MaxBackoff: -1}, "MaxBackoff"},
		{FlusherConfig{ShutdownTimeout: -1}, "ShutdownTimeout"},
		{FlusherConfig{Timeout: -1}, "Timeout"},
	}
	for _, tt := range bad {
		if err := tt.c.setDefaults(); err == nil || !strings.Contains(err.Error(), "FlusherConfig."+tt.field) {
			t.Errorf("setDefaults(%+v) = %v, want an error naming %s", tt.c, err, tt.field)
		}
	}
}

func TestProcessID(t *testing.T) {
	a, b := NewProcessID(), NewProcessID()
	if a == b {
		t.Error("two NewProcessID calls gave the same id")
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(a.String()) {
		t.Errorf("ProcessID.String() = %q, want a version 4 UUID", a)
	}
}

func TestSatAdd(t *testing.T) {
	tests := []struct{ a, b, want uint64 }{
		{1, 2, 3},
		{math.MaxInt64 - 1, 1, math.MaxInt64},
		{math.MaxInt64, 1, math.MaxInt64},
		{1, math.MaxUint64, math.MaxInt64},
		{math.MaxUint64, 0, math.MaxInt64},
	}
	for _, tt := range tests {
		if got := SatAdd(tt.a, tt.b); got != tt.want {
			t.Errorf("SatAdd(%d, %d) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
