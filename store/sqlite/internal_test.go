package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

func TestPragmas(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
	defer db.Close()
	ctx := context.Background()
	for q, want := range map[string]string{
		"PRAGMA journal_mode": "wal",
		"PRAGMA synchronous":  "2", // FULL
		"PRAGMA foreign_keys": "1",
		"PRAGMA busy_timeout": "10000",
	} {
		var got string
		if err := db.w.conn.QueryRowContext(ctx, q).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %s, want %s", q, got, want)
		}
	}
	var qo string
	if err := db.rdb.QueryRowContext(ctx, "PRAGMA query_only").Scan(&qo); err != nil || qo != "1" {
		t.Errorf("read pool query_only = %q, %v", qo, err)
	}
}

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a", "b", "ward.db")
	db := openTest(t, path)
	in := storetest.Sample(1, 1, 1)
	if _, err := db.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Reopening applies nothing and keeps the data.
	db = openTest(t, path)
	var n int
	if err := db.rdb.QueryRowContext(ctx, `SELECT count(*) FROM schema_version`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) {
		t.Errorf("%d schema_version rows, want %d", n, len(migrations))
	}
	if _, err := db.Get(ctx, in.SOPInstanceUID); err != nil {
		t.Fatal(err)
	}
	// Pretend a newer binary migrated the database.
	if _, err := db.w.conn.ExecContext(ctx, `INSERT INTO schema_version VALUES (?, 0)`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, path); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open(newer database) error = %v, want ErrSchemaTooNew", err)
	}
}

func TestRegistered(t *testing.T) {
	ix, err := store.OpenIndex(context.Background(), "sqlite", filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.CountInstances(context.Background()); err == nil {
		t.Error("CountInstances after Close succeeded")
	}
	if _, err := ix.Put(context.Background(), storetest.Sample(1, 1, 1)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Put after Close error = %v, want ErrClosed", err)
	}
}

// A failing write in a group-committed batch must not fail the others.
func TestBatchIsolation(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
	defer db.Close()
	shared := storetest.NewKey()
	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := storetest.Sample(i, i%3, i%7)
			if i%4 == 0 {
				in.BlobKey = shared // UNIQUE violation for all but one
			}
			_, errs[i] = db.Put(ctx, in)
		}()
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		_, gerr := db.Get(ctx, storetest.Sample(i, 0, 0).SOPInstanceUID)
		if err != nil {
			failed++
			if !errors.Is(gerr, store.ErrNotFound) {
				t.Errorf("failed Put %d is visible (%v)", i, gerr)
			}
		} else if gerr != nil {
			t.Errorf("Put %d succeeded but Get: %v", i, gerr)
		}
	}
	if failed != n/4-1 {
		t.Errorf("%d Puts failed, want %d", failed, n/4-1)
	}
	checkCounters(t, db)
}

func TestAwkwardPath(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a?b#c %20d", "wärd db")
	db := openTest(t, path)
	if _, err := db.Put(ctx, storetest.Sample(1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at %s: %v", path, err)
	}
}

// Deferred writes commit at synchronous=NORMAL and are visible at once;
// Sync fsyncs the WAL once for all of them; an ordinary write commits at
// synchronous=FULL again.
func TestDeferredWrites(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
	defer db.Close()
	ctx := context.Background()
	syncMode := func() string {
		t.Helper()
		var got string
		if err := db.w.conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	in := storetest.Sample(1, 1, 1)
	in.BlobKey = "k1"
	if err := db.InsertDeferred(ctx, in); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Get(ctx, in.SOPInstanceUID); err != nil || got.BlobKey != "k1" {
		t.Fatalf("Get after InsertDeferred: %+v, %v", got, err)
	}
	if m := syncMode(); m != "1" {
		t.Errorf("synchronous after a deferred batch = %s, want 1 (NORMAL)", m)
	}
	if err := db.InsertDeferred(ctx, in); !errors.Is(err, store.ErrInstanceExists) {
		t.Errorf("InsertDeferred of a stored instance: %v, want ErrInstanceExists", err)
	}
	again := *in
	again.BlobKey = "k2"
	res, err := db.PutDeferred(ctx, &again)
	if err != nil || !res.Replaced || res.OldBlobKey != "k1" {
		t.Fatalf("PutDeferred: %+v, %v", res, err)
	}
	if n := db.w.deferred.Load(); n != 2 {
		t.Errorf("%d deferred batches counted, want 2", n)
	}
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if db.synced != 2 {
		t.Errorf("synced = %d after Sync, want 2", db.synced)
	}
	if err := db.Sync(ctx); err != nil { // nothing new: no fsync
		t.Fatal(err)
	}
	other := storetest.Sample(2, 1, 1)
	other.BlobKey = "k3"
	if _, err := db.Put(ctx, other); err != nil {
		t.Fatal(err)
	}
	if m := syncMode(); m != "2" {
		t.Errorf("synchronous after an ordinary write = %s, want 2 (FULL)", m)
	}
	db.Close()
	if err := db.Sync(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}
}
