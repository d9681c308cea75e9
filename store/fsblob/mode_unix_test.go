//go:build unix

package fsblob_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFilesClosedToOthers: under the usual umask 022, every directory
// the store makes is 0700 and every file 0600, through both ways of
// creating a blob (a chosen key and a slot), pending and published.
func TestFilesClosedToOthers(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o022))
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s := open(t, dir)
	for i, key := range []string{"chosen-key", ""} {
		w, err := s.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("patient data")); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := s.Publish(ctx, w.Key()); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.Close()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			n++
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("%d files under the store", n)
	}
}
