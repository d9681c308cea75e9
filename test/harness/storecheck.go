package harness

import (
	"context"
	"io"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/store"
)

// StoredDataSet reads a blob and returns its data set, after Ward's
// Part 10 header.
func StoredDataSet(ctx context.Context, bs store.Blobs, key string) ([]byte, error) {
	rc, err := bs.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	_, br, err := dicom.ReadFileHeader(rc, 1<<20)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(br)
}

// CheckBlobsIndexed checks that the blobs of bs are as many as the n
// instances of idx, every one published and named by an instance (no
// orphan). Without a BlobWalker it logs that it cannot.
func CheckBlobsIndexed(t testing.TB, ctx context.Context, idx store.Index, bs store.Blobs, n int64) {
	t.Helper()
	bw, ok := bs.(store.BlobWalker)
	if !ok {
		t.Log("the blobs cannot be listed (no BlobWalker): orphans not checked")
		return
	}
	blobs := 0
	err := bw.WalkBlobs(ctx, func(key string, published bool) error {
		if !published {
			t.Errorf("blob %s still pending", key)
			return nil
		}
		blobs++
		ok, err := idx.HasBlob(ctx, key)
		if err != nil {
			return err
		}
		if !ok {
			t.Errorf("blob %s: no instance references it (an orphan)", key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if int64(blobs) != n {
		t.Errorf("the store holds %d published blobs, the index %d instances", blobs, n)
	}
}
