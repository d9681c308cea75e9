//go:build !unix

package datadir

import "io/fs"

// exposure: no Unix modes or owners here; nothing is checked.
func exposure(fs.FileInfo) string { return "" }

func tighten(string, fs.FileInfo) error { return nil }

// CurrentUser names the user Ward runs as.
func CurrentUser() string { return "the user Ward runs as" }

func ForeignOwner(fs.FileInfo) string { return "" }

// LockFile: no file locks here; concurrent backups into one folder are
// not excluded.
func LockFile(string) (func(), bool, error) { return func() {}, false, nil }

func keyExposure(fs.FileInfo) string { return "" }
