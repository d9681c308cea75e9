package fsblob

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"golang.org/x/sys/unix"
)

// On a filesystem that has the flag (ext4), pending/ carries FS_TOPDIR_FL
// so that each slot batch's directory gets a block group of its own.
// Where the temporary directory has no such flag, the test runs on an ext4
// image (testci.Ext4Dir).
func TestPendingSpreadsSubdirs(t *testing.T) {
	base := t.TempDir()
	if err := spreadSubdirs(base); err != nil {
		t.Logf("%s has no FS_TOPDIR_FL (%v): on an ext4 image instead", base, err)
		base = testci.Ext4Dir(t)
	}
	s, err := Open(context.Background(), filepath.Join(base, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.Open(s.pending)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	if flags&fsTopdirFL == 0 {
		t.Errorf("pending/ flags %#x: no FS_TOPDIR_FL", flags)
	}
}

// An intent record set before Commit is read back from the pending blob
// and from the published one. Where the temporary directory keeps no user
// extended attributes, the test runs on an ext4 image (testci.Ext4Dir).
func TestIntentRecord(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	if err := unix.Setxattr(base, "user.ward-probe", []byte("1"), 0); err != nil {
		t.Logf("%s keeps no user extended attributes (%v): on an ext4 image instead", base, err)
		base = testci.Ext4Dir(t)
	}
	s, err := Open(ctx, filepath.Join(base, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.(*writer).SetIntent([]byte("1 5 00000000 0 127.0.0.1:1")); err != nil {
		t.Fatalf("SetIntent: %v", err)
	}
	w.Write([]byte("hello"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"pending", "published"} {
		b, err := s.Intent(ctx, w.Key())
		if err != nil || string(b) != "1 5 00000000 0 127.0.0.1:1" {
			t.Errorf("%s: Intent = %q, %v", stage, b, err)
		}
		if err := s.Publish(ctx, w.Key()); err != nil {
			t.Fatal(err)
		}
	}
	w, err = s.Create(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Intent(ctx, w.Key()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Intent of a blob without one: %v, want ErrNotFound", err)
	}
	if err := w.(*writer).SetIntent([]byte("x")); err == nil {
		t.Error("SetIntent after Commit succeeded")
	}
}
