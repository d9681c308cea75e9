package fsblob

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
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

// The slots of a batch live in a pending shard directory of their own,
// removed once the batch has left it; Close leaves pending/ empty.
func TestSlotBatchDirectoryRemoved(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.startSlots()
	for deadline := time.Now().Add(10 * time.Second); len(s.slots) < slotBatch; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots made in 10 s", len(s.slots))
		}
	}
	var first string
	for i := 0; i < slotBatch; i++ {
		w, err := s.Create(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if first == "" {
			first = w.Key()
		}
		if w.Key()[:4] != first[:4] {
			t.Fatalf("slot %d has key %s, batch prefix %s", i, w.Key(), first[:4])
		}
		if _, err := w.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0: // committed and published
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := s.Publish(ctx, w.Key()); err != nil {
				t.Fatal(err)
			}
		case 1: // aborted
			if err := w.Abort(); err != nil {
				t.Fatal(err)
			}
		case 2: // committed, then deleted (its index row failed)
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, w.Key()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(s.pending, first[:4])); !os.IsNotExist(err) {
		t.Errorf("pending/%s after its batch left it: %v", first[:4], err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(s.pending)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("pending/%s after Close", e.Name())
	}
}

// A data directory written before pending shard directories keeps its
// pending blobs: Recover moves them into their shard and goes on.
func TestRecoverFlatPending(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	keep, drop := "aa11"+newKey()[4:], "bb22"+newKey()[4:]
	for _, k := range []string{keep, drop} {
		if err := os.WriteFile(filepath.Join(s.pending, k+ext), []byte(k), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.pending, "junk"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	asked := map[string]bool{}
	err = s.Recover(ctx, func(key string) (bool, error) {
		asked[key] = true
		return key == keep, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !asked[keep] || !asked[drop] || len(asked) != 2 {
		t.Errorf("Recover asked about %v", asked)
	}
	if b, err := os.ReadFile(s.objectPath(keep)); err != nil || string(b) != keep {
		t.Errorf("kept blob: %q, %v", b, err)
	}
	if _, err := os.Stat(s.objectPath(drop)); !os.IsNotExist(err) {
		t.Errorf("dropped blob published: %v", err)
	}
	ents, err := os.ReadDir(s.pending)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("pending/%s after Recover", e.Name())
	}
	s.Close()
}

// PublishAll links each blob into objects/, fsyncs, then drops the pending
// name; a blob linked before a crash (both names) is finished, a missing
// key is reported while the others are published.
func TestPublishAll(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var keys []string
	for i := 0; i < 3; i++ {
		w, err := s.Create(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte{byte(i)})
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, w.Key())
	}
	// keys[1]: linked, then a crash before its pending name went.
	if err := os.MkdirAll(s.objectDir(keys[1]), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(s.pendingPath(keys[1]), s.objectPath(keys[1])); err != nil {
		t.Fatal(err)
	}
	missing := "ffff" + newKey()[4:]
	err = s.PublishAll(ctx, append(keys, missing))
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PublishAll with a missing key: %v, want ErrNotFound", err)
	}
	for i, k := range keys {
		if b, err := os.ReadFile(s.objectPath(k)); err != nil || len(b) != 1 || b[0] != byte(i) {
			t.Errorf("blob %d: %v, %v", i, b, err)
		}
		if _, err := os.Lstat(s.pendingPath(k)); !os.IsNotExist(err) {
			t.Errorf("blob %d still pending: %v", i, err)
		}
	}
	if err := s.PublishAll(ctx, keys); err != nil {
		t.Errorf("publishing published blobs: %v", err)
	}
}

// Slots handed out one after another have their inodes in different
// inode-table blocks while the batch has slots left in several blocks.
func TestSpreadInodes(t *testing.T) {
	dir := t.TempDir()
	var batch []*slot
	for i := 0; i < 40; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		batch = append(batch, &slot{key: fmt.Sprint(i), f: f})
	}
	out := spreadInodes(batch)
	if len(out) != len(batch) {
		t.Fatalf("%d slots out of %d", len(out), len(batch))
	}
	seen := map[*slot]bool{}
	for _, sl := range out {
		if seen[sl] {
			t.Fatalf("slot %s handed out twice", sl.key)
		}
		seen[sl] = true
	}
	if _, ok := inodeNumber(batch[0].f); !ok {
		testci.SkipOrFail(t, "no inode numbers here: the order is kept")
	}
	blocks := map[uint64]int{}
	for _, sl := range batch {
		ino, _ := inodeNumber(sl.f)
		blocks[ino/inodesPerBlock]++
	}
	// While every block still has slots, neighbours differ in block.
	rounds := len(batch)
	for _, n := range blocks {
		rounds = min(rounds, n)
	}
	for i := 1; i < rounds*len(blocks); i++ {
		a, _ := inodeNumber(out[i-1].f)
		b, _ := inodeNumber(out[i].f)
		if a/inodesPerBlock == b/inodesPerBlock {
			t.Errorf("slots %d and %d share inode block %d (%d blocks)", i-1, i, a/inodesPerBlock, len(blocks))
		}
	}
}
