//go:build unix

package server

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/datadir"
)

func chmod(t *testing.T, p string, mode fs.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// TestOpenRefusesOpenDataDir: Server.Open refuses a data directory with a
// file open to others (an index left 0644 by an older Ward), and with
// FixPermissions closes it and starts; OpenAdmin (the admin commands on a
// stopped Ward) refuses it too. A directory whose files are all closed
// already (a fresh mkdir'd folder holding ward.toml) is closed by itself.
func TestOpenRefusesOpenDataDir(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o022))
	c := config.Default()
	c.DICOM.Listen = "127.0.0.1:0"
	c.Web.Listen = "127.0.0.1:0"
	c.Storage.MinFree = "0"
	c.DataDir = filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(c.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	chmod(t, c.DataDir, 0o755)
	if err := os.WriteFile(filepath.Join(c.DataDir, "ward.toml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dataLayout.CloseOpenDirs(c.DataDir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(c.DataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("a 0755 data directory holding only closed files: %v, %v; want it closed to 0700", fi.Mode(), err)
	}
	chmod(t, c.DataDir, 0o755)
	if err := os.WriteFile(filepath.Join(c.DataDir, "index.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	chmod(t, filepath.Join(c.DataDir, "index.db"), 0o644)
	s := &Server{Config: c}
	if err := s.Open(t.Context()); !errors.Is(err, datadir.ErrOpen) {
		t.Fatalf("Open of a 0755 data directory holding a 0644 index: %v", err)
	}
	if _, err := OpenAdmin(t.Context(), c, nil); !errors.Is(err, datadir.ErrOpen) {
		t.Fatalf("OpenAdmin of a 0755 data directory holding a 0644 index: %v", err)
	}
	s = &Server{Config: c, FixPermissions: true}
	if err := s.Open(t.Context()); err != nil {
		t.Fatalf("Open with FixPermissions: %v", err)
	}
	s.ln.Close()
	s.adminLn.Close()
	s.closeAudit()
	s.closeStores()
	err := filepath.WalkDir(c.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v after Open", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
