package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ward-pacs/ward/store/storetest"
)

// BenchmarkPut measures Put including the fsync of the commit, on a file in
// b.TempDir(). Parallel runs 8 goroutines per GOMAXPROCS; NoGroupCommit runs
// the same with one Put per transaction, for comparison.
//
//	go test ./store/sqlite -run '^$' -bench Put -benchtime 2000x
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	var seq atomic.Int64
	put := func(b *testing.B, db *DB) {
		n := int(seq.Add(1))
		in := storetest.Sample(n, n/500, n/100) // 100 instances per series, 5 series per study
		if _, err := db.Put(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		parallel bool
		maxBatch int
	}{
		{"Sequential", false, defaultMaxBatch},
		{"Parallel", true, defaultMaxBatch},
		{"ParallelNoGroupCommit", true, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			db, err := open(ctx, filepath.Join(b.TempDir(), "ward.db"), c.maxBatch)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			b.ResetTimer()
			if c.parallel {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						put(b, db)
					}
				})
			} else {
				for b.Loop() {
					put(b, db)
				}
			}
			b.StopTimer()
			if n, _ := db.CountInstances(ctx); n < int64(b.N) {
				b.Fatal(fmt.Sprintf("%d instances after %d Puts", n, b.N))
			}
		})
	}
}
