package tracker

// A ClientError is a refusal whose text is meant for the client: frontends
// send it as a BEP 15 error or an HTTP "failure reason". Any other error is
// internal and goes out as a fixed text, its detail only in logs.
type ClientError struct {
	msg string
}

func (e *ClientError) Error() string { return e.msg }

// Refusal returns a ClientError with text msg. Make refusals once, at
// start, not per request: a remote peer decides how often they happen.
func Refusal(msg string) *ClientError { return &ClientError{msg} }

// Refusals the core returns. They are preallocated: a remote peer decides
// how often they happen.
var (
	ErrInvalidPort    = &ClientError{"invalid port: 0"}
	ErrInvalidEvent   = &ClientError{"invalid event"}
	ErrInvalidAddress = &ClientError{"invalid peer address"}
)
