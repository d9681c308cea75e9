package fsblob

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A young archive used to make two shard directories (and fsync their
// parents) for nearly every object published: slot keys of one batch now
// share a shard, made when the batch is.
func TestSlotBatchSharesShard(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 40
	for i := 0; i < n; i++ {
		w, err := s.Create(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if !ValidKey(w.Key()) || len(w.Key()) != 32 {
			t.Fatalf("key %q", w.Key())
		}
		if err := s.Publish(ctx, w.Key()); err != nil {
			t.Fatal(err)
		}
	}
	shards, err := filepath.Glob(filepath.Join(s.objects, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	// The first Creates may fall back to random keys while the pool is
	// being filled; the others are in the first batch's shard. Random
	// shards would give about one directory per object.
	if len(shards) > n/4 {
		t.Errorf("%d objects published into %d shard directories, want at most %d", n, len(shards), n/4)
	}
	objs, _ := filepath.Glob(filepath.Join(s.objects, "*", "*", "*"+ext))
	if len(objs) != n {
		t.Errorf("%d objects published, want %d", len(objs), n)
	}
	if _, err := os.Stat(s.pending); err != nil {
		t.Fatal(err)
	}
}
