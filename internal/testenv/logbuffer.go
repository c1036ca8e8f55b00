package testenv

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Logger returns a text logger that writes to a new LogBuffer without
// timestamps, so a test can match whole records.
func Logger() (*slog.Logger, *LogBuffer) {
	var buf LogBuffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h), &buf
}

// Background runs run (a service's Run loop) in a goroutine until cancel
// is called; wait then returns what run returned.
func Background(run func(context.Context) error) (cancel func(), wait func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	return cancel, func() error { return <-done }
}

// A LogBuffer collects what a logger shared by several goroutines writes,
// for a test to read back. It is safe for concurrent use; the zero
// LogBuffer is empty and ready to use.
type LogBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns everything written so far, one line per element, without
// the last newline.
func (b *LogBuffer) Lines() []string {
	return strings.Split(strings.TrimSpace(b.String()), "\n")
}
