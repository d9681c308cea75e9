//go:build unix

package server

import "syscall"

// openFileLimit is the process's soft limit on open files (which Go
// raises to the hard limit at start), 0 when unknown.
func openFileLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	n := uint64(r.Cur)
	if n >= 1<<62 { // RLIM_INFINITY
		return 0
	}
	return n
}
