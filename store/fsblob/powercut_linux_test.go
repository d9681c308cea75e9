package fsblob_test

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/lazyfs"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// TestCommitDurableAtReturn: once Commit returns, the blob's bytes and its
// intent record survive a power cut, on both paths (a slot, and a named
// blob renamed from tmp/ into pending/), and a published blob survives in
// objects/. The blob store runs on lazyfs, which loses everything not
// fsynced: without the file's fsync in Commit (or a directory fsync on the
// way) this fails. It also counts the file fsyncs each Commit makes.
func TestCommitDurableAtReturn(t *testing.T) {
	testci.RequireRoot(t, "mounting lazyfs (FUSE)")
	ctx := context.Background()
	lfs, err := lazyfs.MountTemp(t.TempDir())
	if err != nil {
		testci.SkipOrFail(t, "lazyfs: %v", err)
	}
	defer lfs.Unmount()
	s := open(t, filepath.Join(lfs.Dir(), "blobs"))
	defer s.Close()

	want := map[string][]byte{}
	put := func(key string, publish bool) {
		t.Helper()
		bw, err := s.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		// With no key, wait for a slot (the pool fills in the background;
		// until then Create takes the named path).
		for deadline := time.Now().Add(10 * time.Second); key == "" && !bw.(store.DurableNamer).NameDurable(); {
			bw.Abort()
			if time.Now().After(deadline) {
				t.Fatal("no slot after 10s")
			}
			time.Sleep(10 * time.Millisecond)
			if bw, err = s.Create(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		key = bw.(interface{ Key() string }).Key()
		data := storetest.Data(key, 100_000)
		if _, err := bw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := bw.(interface{ SetIntent([]byte) error }).SetIntent([]byte("intent " + key)); err != nil {
			t.Fatal(err)
		}
		before := lfs.FileSyncs()
		if err := bw.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := lfs.FileSyncs() - before; n < 1 {
			t.Errorf("Commit of %s made %d file fsyncs, want at least 1", key, n)
		}
		if publish {
			if err := s.Publish(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		want[key] = data
	}
	put("", false)                 // a slot
	put(storetest.NewKey(), false) // tmp/ -> pending/
	put("", true)                  // published
	put(storetest.NewKey(), true)  // published

	after := filepath.Join(t.TempDir(), "after")
	if err := lfs.Snapshot(after); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, filepath.Join(after, "blobs"))
	defer s2.Close()
	for key, data := range want {
		rc, err := s2.Open(ctx, key)
		if err != nil {
			t.Errorf("%s after the power cut: %v", key, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s after the power cut: %d bytes (%v), want the %d written", key, len(got), err, len(data))
		}
		if in, err := s2.Intent(ctx, key); err != nil || string(in) != "intent "+key {
			t.Errorf("%s's intent after the power cut: %q %v", key, in, err)
		}
	}
}
