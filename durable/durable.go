// Package durable makes changes to the file system survive a power cut: an
// fsync of a file or of a directory (whose entries it makes durable), and a
// MkdirAll that fsyncs the parent of each directory it creates. It is a
// leaf (the standard library only), for every floor that writes files.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Sync fsyncs the file or directory at path.
func Sync(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}

// MkdirAll is os.MkdirAll that also fsyncs the parent of each directory
// it creates: a file fsynced inside a new directory is worth nothing if
// the directory itself can vanish.
func MkdirAll(dir string, perm fs.FileMode) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return Sync(parent)
}

// WriteNew creates path with b, of mode whatever the umask, fsynced (not
// its directory: Sync it once the files it gets are written); an existing
// file is an error (fs.ErrExist). A file it could not write whole is
// removed.
func WriteNew(path string, b []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
