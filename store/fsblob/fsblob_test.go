package fsblob_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/storetest"
)

func open(t *testing.T, dir string) *fsblob.Store {
	t.Helper()
	s, err := fsblob.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.TestBlobs(t, func(t *testing.T) store.Blobs { return open(t, t.TempDir()) })
}

func TestRegistered(t *testing.T) {
	bs, err := store.OpenBlobs(context.Background(), "fs", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bs.Close()
}

// TestNodeKeysOfThePast: a directory no other node shares is this node's
// whole, whatever node the keys name: a backup folder (copies pending
// under the source node's keys) served by a node of its own, or a data
// directory given a new node ID, decides on every pending blob at start.
func TestNodeKeysOfThePast(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bs := open(t, dir) // as ward backup writes the folder: no node
	key := storetest.NewKey() + ".node-old"
	w, err := bs.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("copy")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	bs.Close()

	bs = open(t, dir)
	defer bs.Close()
	if err := bs.SetNode("node-new"); err != nil {
		t.Fatal(err)
	}
	if err := bs.Recover(ctx, func(string) (bool, error) { return false, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Open(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a pending copy under another node's key stayed in an unshared directory: %v", err)
	}
	for _, bad := range []string{"", "a.b", "../x", strings.Repeat("n", 65)} {
		if err := bs.SetNode(bad); err == nil {
			t.Errorf("SetNode(%q) accepted", bad)
		}
	}
}
