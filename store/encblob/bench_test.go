package encblob

import (
	"context"
	"io"
	"strconv"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// BenchmarkBlobs writes (Create, Write, Commit, Publish) and reads whole
// objects of a CT-like and an MR-like size over files, with encryption
// off and on, side by side in one run:
//
//	go test -run '^$' -bench Blobs -benchtime 2000x -count 6 ./store/encblob | benchstat -col /enc -
//
// (Not asserted: timing is measured, never tested.)
func BenchmarkBlobs(b *testing.B) {
	ctx := context.Background()
	text := keys(b, "k1")
	for _, size := range []int{512 << 10, 128 << 10} {
		data := storetest.Data("bench", size)
		for _, enc := range []string{"off", "on"} {
			open := func(b *testing.B) store.Blobs {
				dir := b.TempDir()
				if enc == "off" {
					return openFS(b, dir)
				}
				bs, err := wrapFS(b, dir, text)
				if err != nil {
					b.Fatal(err)
				}
				return bs
			}
			name := "size=" + strconv.Itoa(size>>10) + "KiB/enc=" + enc
			b.Run("op=write/"+name, func(b *testing.B) {
				bs := open(b)
				defer bs.Close()
				b.SetBytes(int64(size))
				for i := 0; b.Loop(); i++ {
					put(b, bs, "k"+strconv.Itoa(i), data)
				}
			})
			b.Run("op=read/"+name, func(b *testing.B) {
				bs := open(b)
				defer bs.Close()
				const n = 64
				for i := range n {
					put(b, bs, "k"+strconv.Itoa(i), data)
				}
				b.SetBytes(int64(size))
				for i := 0; b.Loop(); i++ {
					rc, err := bs.Open(ctx, "k"+strconv.Itoa(i%n))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, rc); err != nil {
						b.Fatal(err)
					}
					rc.Close()
				}
			})
		}
	}
}
