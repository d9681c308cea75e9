package server

import (
	"fmt"
	"os"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/test/harness"
)

// BenchmarkCStoreS3 is BenchmarkCStore with the objects in an S3 bucket
// served by versitygw (posix back end) against the embedded default
// (files), both on the same disk: WARD_BENCH_DIR when set (put it on the
// disk to measure; the default temporary directory may be tmpfs), for
// the data directory and versitygw's buckets alike. The index is SQLite
// in the data directory in both.
//
//	WARD_BENCH_DIR=/var/tmp go test -run '^$' -bench CStoreS3 -benchtime 2000x ./internal/server
func BenchmarkCStoreS3(b *testing.B) {
	dir := os.Getenv("WARD_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		d, err := os.MkdirTemp(dir, "bench-s3")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	s3 := harness.StartS3Dir(b, dir)
	s3.SetEnv(b)
	ct := newSyntheticCT(b, 512*1024)
	for _, blobs := range []string{"fs", "s3"} {
		for _, par := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/512KB/assoc=%d", blobs, par), func(b *testing.B) {
				var edit func(*config.Config)
				if blobs == "s3" {
					bucket, err := s3.NewBucket()
					if err != nil {
						b.Fatal(err)
					}
					edit = func(c *config.Config) {
						c.Storage.Blobs = s3.URL(bucket, "bench")
					}
				}
				if edit == nil {
					edit = func(*config.Config) {}
				}
				benchCStore(b, benchServer(b, edit), ct, par)
			})
		}
	}
}
