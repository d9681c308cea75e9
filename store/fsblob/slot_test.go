package fsblob

import (
	"bytes"
	"context"
	"fmt"
	"io"
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

// Blobs written with O_DIRECT come back byte for byte whatever their size,
// through slots and through the ordinary path, in writes of any size.
func TestDirectWrite(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sizes := []int{0, 1, 4095, 4096, 4097, directChunk - 1, directChunk, directChunk + 1, 3*directChunk + 12345}
	for i, size := range sizes {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(j*31 + i)
		}
		for _, key := range []string{"", fmt.Sprintf("direct-%d", i)} {
			w, err := s.Create(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 && key == "" {
				t.Logf("O_DIRECT: %v", w.(*writer).direct)
			}
			// Writes of uneven sizes, as the archive's buffer makes them.
			for p, step := data, 1; len(p) > 0; step = step*7 + 3 {
				n := min(step%(directChunk+5000)+1, len(p))
				if _, err := w.Write(p[:n]); err != nil {
					t.Fatal(err)
				}
				p = p[n:]
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			rc, err := s.Open(ctx, w.Key())
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("size %d key %q: read %d bytes back, differing", size, key, len(got))
			}
		}
	}
	// An aborted writer leaves nothing behind and returns its buffer.
	w, err := s.Create(ctx, "aborted")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, directChunk+1))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "aborted"); err == nil {
		t.Error("aborted blob is readable")
	}
}
