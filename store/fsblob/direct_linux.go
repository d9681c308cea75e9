package fsblob

import (
	"os"

	"golang.org/x/sys/unix"
)

// setDirect turns on O_DIRECT for f and reports whether it could.
func setDirect(f *os.File) bool {
	fd := f.Fd()
	fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return false
	}
	_, err = unix.FcntlInt(fd, unix.F_SETFL, fl|unix.O_DIRECT)
	return err == nil
}

// clearDirect turns O_DIRECT off again.
func clearDirect(f *os.File) error {
	fd := f.Fd()
	fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(fd, unix.F_SETFL, fl&^unix.O_DIRECT)
	return err
}
