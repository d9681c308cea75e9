//go:build unix

package cli

import "syscall"

// closeUmask makes every file and directory this process creates
// closed to group and others (0600, 0700) even where a mode given is
// looser: Ward's files hold patient data, keys and passcode hashes.
func closeUmask() { syscall.Umask(0o077) }
