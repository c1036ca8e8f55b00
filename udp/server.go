package udp

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/chihaya/chihaya/tracker"
)

// Config configures a Server. Zero values mean "use the default".
type Config struct {
	// Addrs are the addresses to listen on, such as "0.0.0.0:6969" and
	// "[::]:6969". Port 0 picks a free port (shared by all of an address's
	// worker sockets). Empty means both of those defaults.
	Addrs []string
	// Workers is the number of SO_REUSEPORT sockets, each with its own
	// goroutine and buffers, per address. Zero means runtime.NumCPU().
	Workers int
	// Secret keys connection IDs. Processes that share it accept each
	// other's IDs. Empty means 32 random bytes per start. At least 16 bytes.
	Secret []byte
	// ConnIDGrace extends the two minutes BEP 15 gives a connection ID,
	// for clients that reuse IDs longer. Zero means 3 minutes; negative
	// means none.
	ConnIDGrace time.Duration
	// MaxPacket is the largest IP packet (headers included) a reply may
	// make; numwant is clamped to fit. Zero means 1500.
	MaxPacket int
	// AllowIPOverride honours the IP field of IPv4 announces. Off by
	// default: it lets anyone announce someone else's address.
	AllowIPOverride bool
	// Batch is how many datagrams a worker reads and writes per system
	// call. Zero means 32.
	Batch int
	// Logger receives lifecycle messages and worker errors, never per
	// packet. Nil means slog.Default().
	Logger *slog.Logger
}

// Server answers BEP 15 requests on its sockets from one tracker.Tracker.
type Server struct {
	cfg Config
	t   *tracker.Tracker
}

// Listen opens the worker sockets for cfg and returns a Server ready to
// Serve, or an error naming the Config field or address at fault.
func Listen(cfg Config, t *tracker.Tracker) (*Server, error) {
	return nil, errors.New("udp: not implemented yet")
}

// Addrs returns the bound address of each listen address, in Config order.
func (s *Server) Addrs() []netip.AddrPort { return nil }

// Serve answers datagrams until ctx is done, then closes the sockets and
// waits for its workers.
func (s *Server) Serve(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Close closes the sockets of a Server that was never served.
func (s *Server) Close() error { return nil }
