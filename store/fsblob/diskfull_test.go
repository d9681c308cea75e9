package fsblob_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// tinyFS mounts a 1 MiB tmpfs on a temporary directory, or skips the test
// when that is not possible (not root, or no CAP_SYS_ADMIN).
func tinyFS(t *testing.T) string {
	t.Helper()
	testci.RequireRoot(t, "mounting a tmpfs")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=1m,mode=0700"); err != nil {
		testci.SkipOrFail(t, "cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestDiskFull(t *testing.T) {
	ctx := context.Background()
	bs := open(t, tinyFS(t))
	defer bs.Close()

	// Write errors: the blob does not fit.
	key := storetest.NewKey()
	w, err := bs.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0xAB}, 64<<10)
	var werr error
	for range 32 { // 2 MiB
		if _, werr = w.Write(chunk); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("Write error = %v, want ENOSPC", werr)
	}
	if err := w.Commit(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Commit after failed Write error = %v, want ENOSPC", err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort: %v", err)
	}
	assertEmpty(t, bs, key)

	// Same with Abort instead of Commit.
	w, err = bs.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for range 32 {
		if _, werr = w.Write(chunk); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("Write error = %v, want ENOSPC", werr)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort: %v", err)
	}
	assertEmpty(t, bs, key)

	// The space is free again: a small blob fits.
	w, err = bs.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(chunk); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := bs.Publish(ctx, key); err != nil {
		t.Fatal(err)
	}
}

func assertEmpty(t *testing.T, bs store.Blobs, key string) {
	t.Helper()
	if r, err := bs.Open(context.Background(), key); !errors.Is(err, store.ErrNotFound) {
		if err == nil {
			r.Close()
		}
		t.Errorf("Open after failed write: %v, want ErrNotFound", err)
	}
	dir := bs.(interface{ Dir() string }).Dir()
	for _, sub := range []string{"tmp", "pending", "objects"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s/ holds %d entries after a failed write", sub, len(ents))
		}
	}
}
