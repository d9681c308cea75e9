//go:build !unix

package cli

// closeUmask: no umask on this system; each file's own mode applies.
func closeUmask() {}
