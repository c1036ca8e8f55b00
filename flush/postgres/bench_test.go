package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

// BenchmarkFlush measures one flush of 100,000 rows of each kind against
// the real server: swarm counts (every row changed, as after a restart)
// and accounting deltas (100,000 user-torrents of 10,000 users, plus their
// per-user sums). Run it with -benchtime 3x: every iteration is a full
// transaction.
func BenchmarkFlush(b *testing.B) {
	const rows = 100_000
	ctx := context.Background()
	b.Run("kind=swarms/rows=100000", func(b *testing.B) {
		s := open(b, testenv.Database(b))
		batch := &flush.SwarmBatch{Process: flush.NewProcessID(), StartedAt: time.Now(), StaleAfter: time.Minute, Full: true}
		for i := range rows {
			var ih peertable.InfoHash
			ih[0], ih[1], ih[2] = byte(i), byte(i>>8), byte(i>>16)
			batch.Upserts = append(batch.Upserts, flush.SwarmRow{InfoHash: ih})
		}
		if err := s.WriteSwarms(ctx, batch); err != nil { // rows exist: iterations update
			b.Fatal(err)
		}
		batch.Full = false
		n := uint32(0)
		b.ReportAllocs()
		for b.Loop() {
			n++
			for i := range batch.Upserts {
				batch.Upserts[i].Counts = peertable.Counts{Seeders: n, Leechers: uint32(i), Completed: n}
			}
			if err := s.WriteSwarms(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("kind=accounting/rows=100000", func(b *testing.B) {
		s := open(b, testenv.Database(b))
		batch := &flush.AccountingBatch{Process: flush.NewProcessID()}
		for i := range rows {
			u := uint32(i / 10)
			batch.Torrents = append(batch.Torrents, flush.UserTorrentDelta{
				User: u, Torrent: uint32(i % 10), Uploaded: 1 << 20, Downloaded: 1 << 19,
			})
			if i%100 == 0 {
				batch.Torrents[i].Snatches, batch.Torrents[i].CompletedAt = 1, time.Now()
			}
			if len(batch.Users) == 0 || batch.Users[len(batch.Users)-1].User != u {
				batch.Users = append(batch.Users, flush.UserDelta{User: u})
			}
			batch.Users[len(batch.Users)-1].Uploaded += 1 << 20
		}
		b.ReportAllocs()
		for b.Loop() {
			batch.Seq++
			if applied, err := s.ApplyAccounting(ctx, batch); err != nil || !applied {
				b.Fatalf("ApplyAccounting = %v, %v", applied, err)
			}
		}
		b.ReportMetric(float64(len(batch.Torrents)+len(batch.Users))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}
