package server

import (
	"fmt"
	"os"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/test/harness"
)

// BenchmarkCStorePG is BenchmarkCStoreS3 with the index in PostgreSQL
// (fsync on, as in production, its cluster under WARD_BENCH_DIR) beside
// the embedded default: sqlite+fs, sqlite+s3, postgres+fs and
// postgres+s3, each with one association and with four, in one run so
// that they compare on the same machine at the same time.
//
//	WARD_BENCH_DIR=/var/tmp go test -run '^$' -bench CStorePG -benchtime 2000x -count 3 ./internal/server
func BenchmarkCStorePG(b *testing.B) {
	base := os.Getenv("WARD_BENCH_DIR")
	dir := base
	if dir == "" {
		dir = b.TempDir()
	} else {
		d, err := os.MkdirTemp(dir, "bench-pg")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	s3 := harness.StartS3Dir(b, dir)
	s3.SetEnv(b)
	pg := harness.NewDurablePostgres(b, base)
	ct := newSyntheticCT(b, 512*1024)
	for _, index := range []string{"sqlite", "postgres"} {
		for _, blobs := range []string{"fs", "s3"} {
			for _, par := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s+%s/512KB/assoc=%d", index, blobs, par), func(b *testing.B) {
					edit := func(c *config.Config) {
						if index == "postgres" {
							c.Storage.Index = pg.NewDatabase(b)
						}
						if blobs == "s3" {
							bucket, err := s3.NewBucket()
							if err != nil {
								b.Fatal(err)
							}
							c.Storage.Blobs = s3.URL(bucket, "bench")
						}
					}
					benchCStore(b, benchServer(b, edit), ct, par)
				})
			}
		}
	}
}
