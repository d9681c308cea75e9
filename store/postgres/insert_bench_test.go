package postgres

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

// BenchmarkInsert: Inserts of new instances (a series per writer) from
// 1, 4 and 16 writers at once, each in a transaction of its own, on a
// PostgreSQL cluster with fsync on under WARD_BENCH_DIR (put it on the
// disk to measure). commits/flush is the number of commits per WAL
// flush (pg_stat_wal.wal_sync): above 1, the server committed several
// writers' transactions with one flush (its own group commit).
//
//	WARD_BENCH_DIR=/var/tmp go test -run '^$' -bench Insert -benchtime 2000x -count 3 ./store/postgres
func BenchmarkInsert(b *testing.B) {
	pg := harness.NewDurablePostgres(b, os.Getenv("WARD_BENCH_DIR"))
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	var seq atomic.Int64
	for _, par := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("writers=%d", par), func(b *testing.B) {
			db, err := Open(ctx, pg.NewDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := admin.Exec(ctx, `SELECT pg_stat_reset_shared('wal')`); err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range par {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if err := db.Insert(ctx, storetest.Sample(int(seq.Add(1)), 1+w, 1+w)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			db.Close() // its backends exit and report their statistics
			time.Sleep(200 * time.Millisecond)
			var syncs int64
			if err := admin.QueryRow(ctx, `SELECT wal_sync FROM pg_stat_wal`).Scan(&syncs); err != nil {
				b.Fatal(err)
			}
			if syncs > 0 {
				b.ReportMetric(float64(b.N)/float64(syncs), "commits/flush")
			}
		})
	}
}
