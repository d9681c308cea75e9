package durable

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestMkdirAllAndSync(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b", "c")
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for p := dir; p != root; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}
	if err := MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("again: %v", err)
	}
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Sync(f); err != nil {
		t.Fatal(err)
	}
	if err := Sync(dir); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(f, "sub"), 0o700); !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("under a file: %v", err)
	}
	if err := Sync(filepath.Join(root, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}
