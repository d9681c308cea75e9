//go:build !unix

package server

// openFileLimit: unknown on this system.
func openFileLimit() uint64 { return 0 }
