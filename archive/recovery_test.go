package archive_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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
	idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := fsblob.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
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
			if err := os.Truncate(filepath.Join(dir, "pending", in.BlobKey+".dcm"), 1000); err != nil {
				t.Fatal(err)
			}
		}
	}
	bs.Close()
	idx.Close()

	// Restart.
	idx, err = sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	bs, err = fsblob.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
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
