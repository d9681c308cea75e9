package archive_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/lazyfs"
	"github.com/ward-pacs/ward/internal/testci"
)

// TestStoreDurableAtResponse: what a C-STORE success response acknowledges
// survives a power cut at the moment the response is sent. The stores run
// on lazyfs, which loses everything not fsynced; right after Store returns
// (the response would be sent) the durable image is taken, and an archive
// opened on it (recovery and intent replay run) must hold each instance
// with the data set sent; re-sent ones replace. Each Store must fsync at
// least one file before its response: the object's, which also makes its
// intent record durable (the index row may commit without an fsync, since
// recovery replays it from the intent). Fails without the object's fsync.
//
// Without intent records (a file system without extended attributes), each
// index row is committed durably before the response: that subtest fails
// without the index commit's fsync (synchronous=OFF).
func TestStoreDurableAtResponse(t *testing.T) {
	t.Run("intents", func(t *testing.T) { testStoreDurableAtResponse(t, true) })
	t.Run("no-intents", func(t *testing.T) { testStoreDurableAtResponse(t, false) })
}

func testStoreDurableAtResponse(t *testing.T, intents bool) {
	testci.RequireRoot(t, "mounting lazyfs (FUSE)")
	ctx := context.Background()
	lfs, err := lazyfs.MountTemp(t.TempDir())
	if err != nil {
		testci.SkipOrFail(t, "lazyfs: %v", err)
	}
	defer lfs.Unmount()
	lfs.RefuseXattrs(!intents)
	dir := filepath.Join(lfs.Dir(), "data")
	idx, bs := openStores(t, dir)
	ar := &archive.Archive{Index: idx, Blobs: bs, OnDuplicate: archive.DuplicateReplace}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	f := &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}

	want := map[string][]byte{}
	for i := range 12 {
		uid := fmt.Sprintf("1.2.826.0.1.3680043.10.543.77.%d", i%8+1) // the last 4 replace
		o := ctObject(t, uid)
		o.ds.Set(0x00200013, fmt.Sprint(i)) // Instance Number: a new data set each time
		data := o.bytes(t)
		files, dirs := lfs.FileSyncs(), lfs.DirSyncs()
		if err := f.store(o, data); err != nil {
			t.Fatalf("store %s: %v", uid, err)
		}
		min := int64(1) // the object's
		if !intents {
			min = 2 // and the index's WAL
		}
		if n := lfs.FileSyncs() - files; n < min {
			t.Errorf("store %d of %s made %d file fsyncs (and %d directory fsyncs) before its response, want at least %d", i, uid, n, lfs.DirSyncs()-dirs, min)
		}
		want[uid] = data
	}

	after := filepath.Join(t.TempDir(), "after")
	if err := lfs.Snapshot(after); err != nil {
		t.Fatal(err)
	}
	ar.Close()
	bs.Close()
	idx.Close()

	idx2, bs2 := openStores(t, filepath.Join(after, "data"))
	defer func() { bs2.Close(); idx2.Close() }()
	ar2 := &archive.Archive{Index: idx2, Blobs: bs2}
	if err := ar2.Open(ctx); err != nil {
		t.Fatalf("archive after the power cut: %v", err)
	}
	defer ar2.Close()
	f2 := &fixture{ar: ar2, idx: idx2, blobs: bs2, dir: filepath.Join(after, "data")}
	for uid, data := range want {
		if _, err := idx2.Get(ctx, uid); err != nil {
			t.Errorf("acknowledged %s lost in the power cut: %v", uid, err)
			continue
		}
		if got := f2.dataSetOf(t, uid); !bytes.Equal(got, data) {
			t.Errorf("acknowledged %s after the power cut: %d bytes, want the %d sent", uid, len(got), len(data))
		}
	}
}
