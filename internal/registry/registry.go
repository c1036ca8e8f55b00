// Package registry keeps the drivers that register themselves by name from
// their package's init, as database/sql drivers do. conncache and flush
// each hold one Registry of their own Driver type. The names "" and "none"
// are reserved: configuration uses them to mean "no driver".
//
// A Registry is safe for concurrent use.
package registry

import (
	"fmt"
	"slices"
	"sync"
)

// A Registry maps names to drivers of type D. The zero Registry is not
// usable; call New.
type Registry[D any] struct {
	pkg     string // the owning package, for panic messages
	mu      sync.RWMutex
	drivers map[string]D
}

// New returns an empty Registry whose panics name pkg.
func New[D any](pkg string) *Registry[D] {
	return &Registry[D]{pkg: pkg, drivers: make(map[string]D)}
}

// Register makes d available as name. It panics if d is nil, if name is
// reserved, or if name is already taken: each of those is a programming
// error in a driver's init, not something to recover from.
func (r *Registry[D]) Register(name string, d D) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if any(d) == nil {
		panic(r.pkg + ": Register driver is nil")
	}
	if name == "" || name == "none" {
		panic(fmt.Sprintf("%s: Register with reserved name %q", r.pkg, name))
	}
	if _, dup := r.drivers[name]; dup {
		panic(r.pkg + ": Register called twice for driver " + name)
	}
	r.drivers[name] = d
}

// Names returns the registered names, sorted.
func (r *Registry[D]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.drivers))
	for n := range r.drivers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup returns the driver registered as name.
func (r *Registry[D]) Lookup(name string) (D, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.drivers[name]
	return d, ok
}
