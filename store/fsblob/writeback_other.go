//go:build !linux

package fsblob

import (
	"errors"
	"os"
)

// startWriteback is a no-op where sync_file_range does not exist.
func startWriteback(f *os.File, off, n int64) error { return nil }

// inodeNumber: not used here; slots keep their order.
func inodeNumber(f *os.File) (uint64, bool) { return 0, false }

// spreadSubdirs is a no-op: the flag is ext4's.
func spreadSubdirs(dir string) error { return nil }

func setIntent(f *os.File, b []byte) error { return errors.ErrUnsupported }

func space(dir string) (free, total int64, err error) { return 0, 0, errors.ErrUnsupported }

func getIntent(path string) ([]byte, error) { return nil, errNoIntent }
