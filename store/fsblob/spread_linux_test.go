package fsblob

import (
	"context"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// On a filesystem that has the flag (ext4), pending/ carries FS_TOPDIR_FL
// so that each slot batch's directory gets a block group of its own.
func TestPendingSpreadsSubdirs(t *testing.T) {
	probe := t.TempDir()
	if err := spreadSubdirs(probe); err != nil {
		t.Skipf("this filesystem has no FS_TOPDIR_FL: %v", err)
	}
	s, err := Open(context.Background(), t.TempDir())
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
