package registry

import (
	"slices"
	"strings"
	"testing"
)

type driver interface{ Name() string }

type named string

func (n named) Name() string { return string(n) }

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, want) {
			t.Errorf("panic %v, want one containing %q", r, want)
		}
	}()
	f()
}

func TestRegistry(t *testing.T) {
	r := New[driver]("test")
	r.Register("b", named("b"))
	r.Register("a", named("a"))
	if got := r.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names() = %q", got)
	}
	if d, ok := r.Lookup("a"); !ok || d.Name() != "a" {
		t.Errorf("Lookup(a) = %v, %v", d, ok)
	}
	if _, ok := r.Lookup("c"); ok {
		t.Error("Lookup(c) found a driver")
	}
	mustPanic(t, "twice", func() { r.Register("a", named("x")) })
	mustPanic(t, "nil", func() { r.Register("c", nil) })
	mustPanic(t, "reserved", func() { r.Register("none", named("none")) })
	mustPanic(t, "reserved", func() { r.Register("", named("")) })
}
