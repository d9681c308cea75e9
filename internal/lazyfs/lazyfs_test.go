//go:build linux

package lazyfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/internal/lazyfs"
	"github.com/ward-pacs/ward/internal/testci"
	"golang.org/x/sys/unix"
)

// mount mounts a lazyfs over a fresh directory.
func mount(t *testing.T) (*lazyfs.FS, string) {
	t.Helper()
	fs, err := lazyfs.MountTemp(t.TempDir())
	if err != nil {
		testci.SkipOrFail(t, "lazyfs: %v", err)
	}
	t.Cleanup(func() { fs.Unmount() })
	return fs, fs.Dir()
}

// snapshot is the state a power cut now would leave.
func snapshot(t *testing.T, fs *lazyfs.FS) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "after")
	if err := fs.Snapshot(dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func syncPath(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, p, s string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, p string) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b), true
}

// TestPowerCutSemantics: only what fsync made durable survives.
func TestPowerCutSemantics(t *testing.T) {
	fs, mnt := mount(t)
	write(t, filepath.Join(mnt, "old"), "old", true)
	syncPath(t, mnt)

	write(t, filepath.Join(mnt, "unsynced"), "lost", false) // entry synced below, data never
	write(t, filepath.Join(mnt, "synced"), "kept", true)
	write(t, filepath.Join(mnt, "old"), "new, unsynced", false)
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mnt, "d", "f"), "in d", true) // d fsynced below
	if err := os.Mkdir(filepath.Join(mnt, "e"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(mnt, "e", "g"), "in e", true) // e never fsynced
	syncPath(t, mnt)
	write(t, filepath.Join(mnt, "nodir"), "no entry", true) // mnt not fsynced after
	f, err := os.OpenFile(filepath.Join(mnt, "synced"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fsetxattr(int(f.Fd()), "user.intent", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	if err := os.Link(filepath.Join(mnt, "synced"), filepath.Join(mnt, "d", "link")); err != nil {
		t.Fatal(err)
	}
	syncPath(t, filepath.Join(mnt, "d"))
	if err := os.Rename(filepath.Join(mnt, "old"), filepath.Join(mnt, "renamed")); err != nil {
		t.Fatal(err)
	}

	after := snapshot(t, fs)
	for name, want := range map[string]string{
		"old":      "old",
		"unsynced": "",
		"synced":   "kept",
		"d/f":      "in d",
		"d/link":   "kept",
	} {
		got, ok := content(t, filepath.Join(after, name))
		if !ok || got != want {
			t.Errorf("%s after the cut: %q (exists %v), want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"nodir", "renamed", "e/g"} {
		if _, ok := content(t, filepath.Join(after, name)); ok {
			t.Errorf("%s survived the cut", name)
		}
	}
	v := make([]byte, 8)
	if n, err := unix.Getxattr(filepath.Join(after, "synced"), "user.intent", v); err != nil || string(v[:n]) != "x" {
		t.Errorf("xattr after the cut: %q %v", v[:n], err)
	}
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(after, "synced"), &a)
	unix.Stat(filepath.Join(after, "d", "link"), &b)
	if a.Ino != b.Ino {
		t.Error("hard links came back as two files")
	}
	if fs.FileSyncs() == 0 || fs.DirSyncs() == 0 {
		t.Errorf("syncs counted: %d files, %d directories", fs.FileSyncs(), fs.DirSyncs())
	}
}
