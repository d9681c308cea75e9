package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/internal/lazyfs"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store/sqlite"
	"github.com/ward-pacs/ward/store/storetest"
)

// TestCommitDurableAtReturn: once Put or Insert returns, or Sync after
// deferred writes, the row survives a power cut. The index runs on lazyfs,
// which loses everything not fsynced (SQLite's -shm is shared-mapped on
// it): with synchronous=OFF, or without Sync's fsync of the WAL, this
// fails. It also counts the file fsyncs each durable commit makes.
func TestCommitDurableAtReturn(t *testing.T) {
	testci.RequireRoot(t, "mounting lazyfs (FUSE)")
	ctx := context.Background()
	lfs, err := lazyfs.MountTemp(t.TempDir())
	if err != nil {
		testci.SkipOrFail(t, "lazyfs: %v", err)
	}
	defer lfs.Unmount()
	db, err := sqlite.Open(ctx, filepath.Join(lfs.Dir(), "index", "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	synced := func(what string, fn func() error) {
		t.Helper()
		before := lfs.FileSyncs()
		if err := fn(); err != nil {
			t.Fatal(err)
		}
		if n := lfs.FileSyncs() - before; n < 1 {
			t.Errorf("%s made %d file fsyncs, want at least 1", what, n)
		}
	}
	var uids []string
	for i := range 20 {
		in := storetest.Sample(i+1, 1+i/5, 1+i/2)
		uids = append(uids, in.SOPInstanceUID)
		switch i % 4 {
		case 0:
			synced("Put", func() error { _, err := db.Put(ctx, in); return err })
		case 1:
			synced("Insert", func() error { return db.Insert(ctx, in) })
		case 2:
			if _, err := db.PutDeferred(ctx, in); err != nil {
				t.Fatal(err)
			}
			synced("Sync after PutDeferred", func() error { return db.Sync(ctx) })
		case 3:
			if err := db.InsertDeferred(ctx, in); err != nil {
				t.Fatal(err)
			}
			synced("Sync after InsertDeferred", func() error { return db.Sync(ctx) })
		}
	}

	after := filepath.Join(t.TempDir(), "after")
	if err := lfs.Snapshot(after); err != nil {
		t.Fatal(err)
	}
	db2, err := sqlite.Open(ctx, filepath.Join(after, "index", "ward.db"))
	if err != nil {
		t.Fatalf("index after the power cut: %v", err)
	}
	defer db2.Close()
	for _, uid := range uids {
		if _, err := db2.Get(ctx, uid); err != nil {
			t.Errorf("%s after the power cut: %v", uid, err)
		}
	}
}
