package tracker

import "fmt"

// Limits are the per-source rate limits a frontend applies before it
// calls the core: how often each source (an IPv4 address or an IPv6 /64)
// may connect and announce. Every frontend takes them in this one shape,
// at start from its Config and later from its SetLimits; what a request
// over a limit gets (silence over UDP, a refusal over HTTP) is the
// frontend's to say. The core itself does not limit.
//
// The zero Limits limits nothing.
type Limits struct {
	// ConnectRate is how many connects a second a source may make on
	// average. Zero means no limit. A frontend without a connect step
	// (HTTP) ignores it and ConnectBurst.
	ConnectRate float64
	// ConnectBurst is how many connects a source may make at once before
	// ConnectRate applies. Zero means ConnectRate rounded up, at least 1.
	ConnectBurst int
	// AnnounceRate is how many announces a second a source may make on
	// average. Zero means no limit.
	AnnounceRate float64
	// AnnounceBurst is how many announces a source may make at once
	// before AnnounceRate applies. Zero means AnnounceRate rounded up, at
	// least 1.
	AnnounceBurst int
}

// A LimitError reports a Limits field out of range. Its text is the
// field's name and Reason, without a package prefix: the frontends'
// Configs have fields of the same names and add their own, and the
// daemon turns Field into the name of its config key.
type LimitError struct {
	Field  string // "ConnectRate", "ConnectBurst", "AnnounceRate" or "AnnounceBurst"
	Reason string // such as "-1 out of range (0 means no limit, at most 1e9 a second)"
}

func (e *LimitError) Error() string { return e.Field + " " + e.Reason }

// Check returns a *LimitError for the first field of l out of range, or
// nil. Rates go from 0 to 1e9 a second, bursts from 0 to 1e9; NaN is out
// of range.
func (l Limits) Check() error {
	for _, f := range [...]struct {
		rateName  string
		rate      float64
		burstName string
		burst     int
	}{
		{"ConnectRate", l.ConnectRate, "ConnectBurst", l.ConnectBurst},
		{"AnnounceRate", l.AnnounceRate, "AnnounceBurst", l.AnnounceBurst},
	} {
		switch {
		case !(f.rate >= 0 && f.rate <= 1e9): // NaN too
			return &LimitError{f.rateName, fmt.Sprintf("%v out of range (0 means no limit, at most 1e9 a second)", f.rate)}
		case f.burst < 0 || f.burst > 1e9:
			return &LimitError{f.burstName, fmt.Sprintf("%d out of range (0 means the rate rounded up, at most 1e9)", f.burst)}
		}
	}
	return nil
}
