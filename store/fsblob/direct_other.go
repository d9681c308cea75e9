//go:build !linux

package fsblob

import (
	"errors"
	"os"
)

// setDirect: no O_DIRECT here; blobs are written through the page cache.
func setDirect(f *os.File) bool { return false }

func clearDirect(f *os.File) error { return errors.ErrUnsupported }
