package testci_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
	"golang.org/x/sys/unix"
)

// TestExt4Dir: the image is mounted, writable and keeps user extended
// attributes.
func TestExt4Dir(t *testing.T) {
	dir := testci.Ext4Dir(t)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.test", []byte("1"), 0); err != nil {
		t.Errorf("user extended attributes on the ext4 image: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.EXT4_SUPER_MAGIC {
		t.Errorf("file system type %#x (%v), want ext4", st.Type, err)
	}
}
