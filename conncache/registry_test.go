package conncache

import (
	"strings"
	"testing"
)

type nopDriver struct{}

func (nopDriver) Open(cfg Config) (Pool, error) { return &recorder{}, nil }

func TestRegistry(t *testing.T) {
	Register("test-nop", nopDriver{})
	if got := Drivers(); !contains(got, "test-nop") {
		t.Errorf("Drivers() = %v, want test-nop among them", got)
	}
	for _, name := range []string{"", "none"} {
		if p, err := Open(name, Config{}); p != nil || err != nil {
			t.Errorf("Open(%q) = %v, %v; want nil, nil", name, p, err)
		}
	}
	if _, err := Open("nosuch", Config{}); err == nil || !strings.Contains(err.Error(), `"nosuch"`) || !strings.Contains(err.Error(), "test-nop") {
		t.Errorf("Open(nosuch) error = %v, want it to name the driver and list test-nop", err)
	}
	if _, err := Open("test-nop", Config{SyncInterval: -1}); err == nil || !strings.Contains(err.Error(), "SyncInterval") {
		t.Errorf("Open with a negative SyncInterval: error %v, want one naming SyncInterval", err)
	}
	if p, err := Open("test-nop", Config{}); p == nil || err != nil {
		t.Errorf("Open(test-nop) = %v, %v", p, err)
	}
	for _, tc := range []struct {
		name string
		d    Driver
	}{{"test-nop", nopDriver{}}, {"x", nil}, {"none", nopDriver{}}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q, %v) did not panic", tc.name, tc.d)
				}
			}()
			Register(tc.name, tc.d)
		}()
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestRemoteLifetime(t *testing.T) {
	c := Config{PeerLifetime: 40 * 60e9}
	if got, want := c.RemoteLifetime().Minutes(), 40.0+10+1; got != want {
		t.Errorf("RemoteLifetime = %vm, want %vm", got, want)
	}
}
