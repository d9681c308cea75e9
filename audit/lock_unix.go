//go:build unix

package audit

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lock takes an exclusive lock on the log file: two writers would fork the
// chain.
func lock(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("audit: %s is in use by another writer (another ward serve on the same data?): %w", f.Name(), ErrLocked)
		}
		return fmt.Errorf("audit: locking %s: %w", f.Name(), err)
	}
	return nil
}
