//go:build unix

package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// exposure says how fi is open to another local user, or "".
func exposure(fi fs.FileInfo) string {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return "" // a link's own mode means nothing; it is not followed
	}
	if o := ForeignOwner(fi); o != "" {
		return o
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Sprintf("mode %04o, open to %s", m, who(m))
	}
	return ""
}

// who names the classes a mode opens to.
func who(m fs.FileMode) string {
	switch {
	case m&0o070 != 0 && m&0o007 != 0:
		return "group and others"
	case m&0o070 != 0:
		return "group"
	}
	return "others"
}

// tighten closes p to group and others and, run as root, gives it to
// root.
func tighten(p string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		if os.Geteuid() != 0 {
			return fmt.Errorf("%s is owned by %s: only root can give it to %s (chown)", p, userOf(int(st.Uid)), CurrentUser())
		}
		if err := os.Chown(p, os.Geteuid(), os.Getegid()); err != nil {
			return err
		}
	}
	if m := fi.Mode(); m.Perm()&0o077 != 0 {
		keep := fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
		if err := os.Chmod(p, m&keep&^0o077); err != nil {
			return err
		}
	}
	return nil
}

func userOf(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// CurrentUser names the user Ward runs as.
func CurrentUser() string { return userOf(os.Geteuid()) }

// ForeignOwner says "owned by USER, not by ME" when another user owns fi,
// else "".
func ForeignOwner(fi fs.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return "owned by " + userOf(int(st.Uid)) + ", not by " + CurrentUser()
	}
	return ""
}

// LockFile takes an exclusive lock on the file at path, without waiting;
// unlock releases it. busy reports that another process or run holds it.
func LockFile(path string) (unlock func(), busy bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, true, err
		}
		return nil, false, err
	}
	return func() { f.Close() }, false, nil
}

// keyExposure says how a private key file is open to other users, or "".
func keyExposure(fi fs.FileInfo) string {
	m := fi.Mode().Perm()
	rootOwned := false
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		rootOwned = st.Uid == 0
	}
	switch {
	case m&0o007 != 0:
		return fmt.Sprintf("open to every local user (mode %04o)", m)
	case m&0o070 != 0 && !rootOwned:
		return fmt.Sprintf("open to its group (mode %04o) and not owned by root", m)
	case m&0o020 != 0:
		return fmt.Sprintf("writable by its group (mode %04o)", m)
	}
	return ""
}
