package archive_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store"
	_ "github.com/ward-pacs/ward/store/s3blob"
	_ "github.com/ward-pacs/ward/store/sqlite"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

// TestRecoveryDropsRowsOfUnwrittenS3Blobs: on S3 a new instance's row
// is committed while its object uploads; a crash in between leaves a
// row naming no object, in the node's open epoch. The store was never
// acknowledged: the node's restart removes the row (found through the
// index, no object being there to list) and keeps the intact instance.
func TestRecoveryDropsRowsOfUnwrittenS3Blobs(t *testing.T) {
	s3 := harness.StartS3(t)
	s3.SetEnv(t)
	ctx := context.Background()
	spec := store.Spec{Index: "sqlite", IndexDSN: filepath.Join(t.TempDir(), "index.db"),
		Blobs: "s3", BlobsDSN: s3.URL(s3.Bucket(t), "archive"), Node: "n1"}
	st, err := store.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var keys [2]string
	for i, unwritten := range []bool{false, true} {
		in := storetest.Sample(100+i, 1, 1)
		w, err := st.Blobs.Create(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := w.(store.DurableNamer); !ok || !d.NameDurable() {
			t.Fatal("an S3 blob over an index that lists keys is not NameDurable: its row would wait for its upload")
		}
		data := storetest.Data(w.Key(), 4096)
		w.Write(data)
		if !unwritten {
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		in.BlobKey, in.Size = w.Key(), int64(len(data))
		in.Checksum = checksumOf(t, data)
		if err := st.Index.(store.Inserter).Insert(ctx, in); err != nil {
			t.Fatal(err)
		}
		keys[i] = in.BlobKey
	}
	// Killed: the blobs' handle is dropped, the index closed.
	st.Index.Close()

	st, err = store.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ar := &archive.Archive{Index: st.Index, Blobs: st.Blobs, Caps: &st.Caps, Node: "n1"}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	ar.Close()
	if ok, _ := st.Index.HasBlob(ctx, keys[0]); !ok {
		t.Fatal("the intact instance lost its row")
	}
	if rc, err := st.Blobs.Open(ctx, keys[0]); err != nil {
		t.Fatalf("the intact blob: %v", err)
	} else {
		rc.Close()
	}
	if ok, _ := st.Index.HasBlob(ctx, keys[1]); ok {
		t.Fatal("the row of the object never uploaded is still there")
	}
	if _, err := st.Blobs.Open(ctx, keys[1]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the unwritten blob: %v", err)
	}
	if n, _ := st.Index.CountInstances(ctx); n != 1 {
		t.Fatalf("%d instances, want 1", n)
	}
}
