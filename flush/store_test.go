package flush

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type memDriver struct{ s *memStore }

func (d memDriver) Open(cfg Config) (Store, error) { return d.s, nil }

func TestRegistry(t *testing.T) {
	if _, err := Open("nosuch", Config{}); err == nil || !strings.Contains(err.Error(), `"nosuch"`) || !strings.Contains(err.Error(), "known:") {
		t.Errorf(`Open("nosuch") = %v, want an error naming it and the known drivers`, err)
	}
	if !slices.Contains(Drivers(), "mem-test") { // -count > 1 runs this again
		Register("mem-test", memDriver{newMemStore()})
	}
	if _, err := Open("nosuch", Config{}); err == nil || !strings.Contains(err.Error(), "mem-test") {
		t.Errorf(`Open("nosuch") = %v, want an error listing mem-test`, err)
	}
	s, err := Open("mem-test", Config{MigrateAtStart: true})
	if err != nil || s == nil {
		t.Errorf(`Open("mem-test") = %v, %v; want a store`, s, err)
	}
	if _, err := Open("mem-test", Config{Interval: -1}); err == nil || !strings.Contains(err.Error(), "Interval") {
		t.Errorf("Open with Interval -1 = %v, want an error naming Interval", err)
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

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Interval != 5*time.Second || c.StaleAfter != 30*time.Second || c.ShutdownTimeout != 10*time.Second ||
		c.MaxBackoff != time.Minute || c.PeerLifetime != 31*time.Minute || c.Timeout != 30*time.Second {
		t.Errorf("defaults = %+v", c)
	}
	bad := []struct {
		c     Config
		field string
	}{
		{Config{Interval: time.Millisecond}, "Interval"},
		{Config{Interval: 10 * time.Second, StaleAfter: 15 * time.Second}, "StaleAfter"},
		{Config{MaxBackoff: -1}, "MaxBackoff"},
		{Config{ShutdownTimeout: -1}, "ShutdownTimeout"},
		{Config{PeerLifetime: time.Millisecond}, "PeerLifetime"},
	}
	for _, tt := range bad {
		if err := tt.c.setDefaults(); err == nil || !strings.Contains(err.Error(), tt.field) {
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
