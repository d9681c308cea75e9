package fsblob_test

import (
	"context"
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
