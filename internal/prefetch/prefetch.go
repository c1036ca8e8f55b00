// Package prefetch asks the CPU to start loading memory that the caller
// will need soon, without waiting for it. Go has no prefetch built in; a
// plain load would stall until the data arrived, where a prefetch lets the
// caller do other work while the cache miss is resolved.
//
// A prefetch is only a hint: it never faults (a stale or freed address
// costs nothing but the fetch) and it changes nothing a program can
// observe, so a caller may prefetch memory that another goroutine owns
// without synchronizing with it. On architectures without an assembly
// version, Line does nothing.
package prefetch
