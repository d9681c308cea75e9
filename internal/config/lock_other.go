//go:build !unix

package config

import "os"

// lockFile: without flock, edits of the token file are not serialised
// between processes on this system.
func lockFile(*os.File) error { return nil }
