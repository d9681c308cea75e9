package fsblob

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	s.startSlots()
	for deadline := time.Now().Add(10 * time.Second); len(s.slots) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots made in 10 s", len(s.slots))
		}
	}
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
	objs, err := filepath.Glob(filepath.Join(s.objects, "*", "*", "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != n {
		t.Errorf("%d objects published, want %d", len(objs), n)
	}
	shards := map[string]bool{}
	for _, o := range objs {
		shards[filepath.Dir(o)] = true
	}
	// The first batch (64 slots) holds them all. Random shards would give
	// about one directory per object.
	if len(shards) != 1 {
		t.Errorf("%d objects published into %d shard directories, want 1", n, len(shards))
	}
	if _, err := os.Stat(s.pending); err != nil {
		t.Fatal(err)
	}
}
