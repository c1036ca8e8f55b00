//go:build !unix

package httpcompat

import "syscall"

// setV6Only relies on Go's net package, which makes "tcp6" listeners
// IPv6-only itself.
func setV6Only(network, address string, c syscall.RawConn) error { return nil }
