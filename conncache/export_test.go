package conncache

import "context"

// SyncForTest runs one round of the publisher, as Run does every
// SyncInterval, and reports whether the store took it.
func (m *Mirror) SyncForTest(ctx context.Context) bool { return m.sync(ctx) }
