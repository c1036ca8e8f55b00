package httpcompat

import (
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// ServeHTTP answers GET (or HEAD) /announce and /scrape, with or without
// a passkey segment before them, as an http.Handler: for mounting the
// tracker in another net/http server. Serve does not use it. Refusals are
// bencoded failure reasons with status 200, as clients expect; other
// paths get 404, other methods 405.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v := request{
		path:           r.URL.Path,
		rawQuery:       r.URL.RawQuery,
		realIP:         r.Header[s.realIPHeader],
		acceptEncoding: r.Header["Accept-Encoding"],
		start:          time.Now(),
	}
	switch r.Method {
	case http.MethodGet:
		v.method = methodGet
	case http.MethodHead:
		v.method = methodHead
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		v.remote = ap
	}
	x := s.pool.Get().(*exchange)
	x.hw.w = w
	s.serve(x, &v, &x.hw)
	x.hw.w = nil
	s.putExchange(x)
}

// httpWriter is the replyWriter of ServeHTTP. It lives in the exchange,
// so that passing it as an interface allocates nothing.
type httpWriter struct{ w http.ResponseWriter }

// Header values shared by every reply; net/http only reads them.
var (
	contentType        = []string{"text/plain"}
	allowGetHead       = []string{"GET, HEAD"}
	gzipEncoding       = []string{"gzip"}
	varyAcceptEncoding = []string{"Accept-Encoding"}
)

func (hw *httpWriter) reply(status int, body []byte) {
	h := hw.w.Header()
	h["Content-Type"] = contentType
	if status == http.StatusMethodNotAllowed {
		h["Allow"] = allowGetHead
	}
	if status != http.StatusOK {
		hw.w.WriteHeader(status)
	}
	hw.w.Write(body)
}

func (hw *httpWriter) startFull(length int, gz bool) {
	h := hw.w.Header()
	h["Content-Type"] = contentType
	h["Vary"] = varyAcceptEncoding
	if gz {
		h["Content-Encoding"] = gzipEncoding
	}
	h["Content-Length"] = []string{strconv.Itoa(length)}
}

func (hw *httpWriter) Write(p []byte) (int, error) { return hw.w.Write(p) }
