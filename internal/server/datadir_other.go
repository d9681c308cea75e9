//go:build !unix

package server

import "io/fs"

// exposure: no Unix modes or owners here; nothing is checked.
func exposure(fs.FileInfo) string { return "" }

func tighten(string, fs.FileInfo) error { return nil }

func currentUser() string { return "the user Ward runs as" }

func foreignOwner(fs.FileInfo) string { return "" }

// lockFile: no file locks here; concurrent backups into one folder are
// not excluded.
func lockFile(string) (func(), bool, error) { return func() {}, false, nil }

func keyExposure(fs.FileInfo) string { return "" }
