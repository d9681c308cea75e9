package archive_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
	"github.com/ward-pacs/ward/store/storetest"
)

// TestRecoveryDropsRowsOfTornBlobs: a new instance's index row is committed
// while its object is still being fsynced, so a power loss can leave a row
// whose blob lacks bytes. Such a store was never acknowledged; recovery must
// remove the row and the blob, and keep every blob whose checksum matches.
func TestRecoveryDropsRowsOfTornBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	// Two pending blobs with rows: one intact, one torn (its bytes are
	// cut short after the row was committed, as a crash could leave it).
	var keys [2]string
	for i, torn := range []bool{false, true} {
		in := storetest.Sample(100+i, 1, 1)
		w, err := bs.Create(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		data := storetest.Data(w.Key(), 4096)
		w.Write(data)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		in.BlobKey, in.Size = w.Key(), int64(len(data))
		in.Checksum = checksumOf(t, data)
		if err := idx.Insert(ctx, in); err != nil {
			t.Fatal(err)
		}
		keys[i] = in.BlobKey
		if torn {
			if err := os.Truncate(filepath.Join(dir, "pending", in.BlobKey[:4], in.BlobKey+".dcm"), 1000); err != nil {
				t.Fatal(err)
			}
		}
	}
	bs.Close()
	idx.Close()

	// Restart.
	idx, bs = openStores(t, dir)
	defer idx.Close()
	defer bs.Close()
	ar := &archive.Archive{Index: idx, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	ar.Close()
	if ok, _ := idx.HasBlob(ctx, keys[0]); !ok {
		t.Fatal("the intact instance lost its row")
	}
	if rc, err := bs.Open(ctx, keys[0]); err != nil {
		t.Fatalf("the intact blob: %v", err)
	} else {
		rc.Close()
	}
	if ok, _ := idx.HasBlob(ctx, keys[1]); ok {
		t.Fatal("the torn instance kept its row")
	}
	if _, err := bs.Open(ctx, keys[1]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the torn blob is still there: %v", err)
	}
	if n, _ := idx.CountInstances(ctx); n != 1 {
		t.Fatalf("%d instances, want 1", n)
	}
}

func checksumOf(t *testing.T, b []byte) string {
	t.Helper()
	return archive.Checksum(b)
}

// orderBlobs wraps a Blobs so that its writers hide NameDurable and record
// when Commit has returned.
type orderBlobs struct {
	store.Blobs
	committed atomic.Bool
}

func (b *orderBlobs) Create(ctx context.Context, key string) (store.BlobWriter, error) {
	w, err := b.Blobs.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return &orderWriter{BlobWriter: w, b: b}, nil
}

type orderWriter struct {
	store.BlobWriter
	b *orderBlobs
}

func (w *orderWriter) Commit() error {
	err := w.BlobWriter.Commit()
	w.b.committed.Store(true)
	return err
}

// orderIndex fails a test whose index row is written before the blob's
// Commit returned.
type orderIndex struct {
	*sqlite.DB
	t *testing.T
	b *orderBlobs
}

func (ix *orderIndex) Insert(ctx context.Context, in *store.Instance) error {
	if !ix.b.committed.Load() {
		ix.t.Error("index row inserted before the blob, whose name is not durable, was committed")
	}
	return ix.DB.Insert(ctx, in)
}

func (ix *orderIndex) Put(ctx context.Context, in *store.Instance) (store.PutResult, error) {
	if !ix.b.committed.Load() {
		ix.t.Error("index row put before the blob, whose name is not durable, was committed")
	}
	return ix.DB.Put(ctx, in)
}

// TestRegressionNoOverlapWithoutDurableName: the object's fsync may run
// during the index commit only for a blob whose name is durable already (a
// slot). A blob still in tmp/ would vanish whole in a crash and leave an
// index row that recovery never looks at (caught by the kill test: a row
// without a blob after restart).
func TestRegressionNoOverlapWithoutDurableName(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fs, err := fsblob.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	b := &orderBlobs{Blobs: fs}
	ar := &archive.Archive{Index: &orderIndex{DB: db, t: t, b: b}, Blobs: b}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	f := &fixture{ar: ar, idx: db, blobs: fs, dir: dir, assoc: pipeAssociation(t)}
	for i := 0; i < 3; i++ {
		b.committed.Store(false)
		o := ctObject(t, fmt.Sprintf("1.2.826.0.1.3680043.10.1432.5.%d", i))
		if err := f.store(o, o.bytes(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// openStores opens a sqlite index and an fs blob store in dir.
func openStores(t testing.TB, dir string) (*sqlite.DB, *fsblob.Store) {
	t.Helper()
	ctx := context.Background()
	idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := fsblob.Open(ctx, dir)
	if err != nil {
		idx.Close()
		t.Fatal(err)
	}
	return idx, bs
}

// unreadableBlobs fails every Open, as an object store that cannot be
// reached for a moment does.
type unreadableBlobs struct{ store.Blobs }

var errAway = errors.New("object store away")

func (unreadableBlobs) Open(context.Context, string) (io.ReadCloser, error) { return nil, errAway }

// TestRecoveryKeepsRowsOfUnreadableBlobs: a pending blob whose row
// recovery checks but cannot read now (an object store away, an I/O
// error) is not taken for a torn one: its row stays, the start fails
// saying why, and the next start keeps it. (Dropping the row would lose
// an acknowledged object.)
func TestRecoveryKeepsRowsOfUnreadableBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	in := storetest.Sample(100, 1, 1)
	w, err := bs.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	data := storetest.Data(w.Key(), 4096)
	w.Write(data)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	in.BlobKey, in.Size, in.Checksum = w.Key(), int64(len(data)), checksumOf(t, data)
	if err := idx.Insert(ctx, in); err != nil {
		t.Fatal(err)
	}
	bs.Close()
	idx.Close()

	idx, bs = openStores(t, dir)
	ar := &archive.Archive{Index: idx, Blobs: unreadableBlobs{bs}}
	if err := ar.Open(ctx); !errors.Is(err, errAway) {
		t.Errorf("start with the blob unreadable: %v, want the read's error", err)
	}
	if ok, _ := idx.HasBlob(ctx, in.BlobKey); !ok {
		t.Fatal("the row of an unreadable blob was dropped")
	}
	bs.Close()
	idx.Close()

	idx, bs = openStores(t, dir)
	defer idx.Close()
	defer bs.Close()
	ar = &archive.Archive{Index: idx, Blobs: bs}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	ar.Close()
	if ok, _ := idx.HasBlob(ctx, in.BlobKey); !ok {
		t.Fatal("the row was dropped at the next start")
	}
}
