// Package datadir checks and tightens the permissions of a data
// directory (and of a backup folder, which is one): no other local user
// may read or change anything in it.
package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A data directory holds patient data (the index, its write-ahead log,
// the objects, the audit log), the peers' and users' settings and the
// private keys: no other local user may read or change any of it. Ward
// creates every file 0600 and every directory 0700; at start it refuses
// a data directory another user can reach, as PostgreSQL does, unless
// asked to tighten it (ward serve --fix-permissions).

// Layout is what the checks know of a data directory's contents.
type Layout struct {
	// Trees are the directories, by name in the data directory, that hold
	// the objects (the default blobs'): the checks look at each of them
	// but not at the files below, which may be millions (the closed
	// directories above them keep others out). Fix goes through them
	// too.
	Trees map[string]bool
}

// ErrOpen: the data directory, or something in it, is owned by
// another user or open to group or others.
var ErrOpen = errors.New("the data directory is open to other local users")

// maxListed caps the paths an ErrOpen error names.
const maxListed = 5

// Check refuses a data directory that is not owned by the user
// Ward runs as, or that group or others may read, write or enter; so
// with each file and directory in it, except the files of the object
// trees. extra are more directories to check likewise (an audit log kept
// elsewhere). A directory that does not exist passes (Ward creates it
// 0700).
func (l Layout) Check(dir string, extra ...string) error {
	bad, err := l.OpenToOthers(append([]string{dir}, extra...)...)
	if err != nil || bad == "" {
		return err
	}
	return fmt.Errorf("%w:\n  %s\nIt holds patient data and keys. Fix: start once with ward serve --fix-permissions (closes every file to 0600 and directory to 0700, and, run as root, gives them to root), or run chown -R %s %s && chmod -R go-rwx %s",
		ErrOpen, bad, CurrentUser(), Quote(dir), Quote(dir))
}

// OpenToOthers lists (one per line, the first maxListed) what below the
// roots is open to other users, as Check sees it; "" when nothing.
func (l Layout) OpenToOthers(roots ...string) (string, error) {
	var bad []string
	n := 0
	for _, root := range roots {
		if root == "" {
			continue
		}
		err := l.walk(root, false, func(p string, fi fs.FileInfo) error {
			if why := exposure(fi); why != "" {
				n++
				if len(bad) < maxListed {
					bad = append(bad, fmt.Sprintf("%s (%s)", p, why))
				}
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("checking permissions: %w", err)
		}
	}
	if n > len(bad) {
		bad = append(bad, fmt.Sprintf("... and %d more", n-len(bad)))
	}
	return strings.Join(bad, "\n  "), nil
}

// Fix tightens the data directory and everything in it, object
// files included: group and others lose every permission, and, when Ward
// runs as root, whatever another user owns becomes root's. Symbolic links
// are not followed, except those in the data directory itself (a folder
// kept on another disk), whose target is tightened in turn. It returns
// how many files and directories it changed.
func (l Layout) Fix(dir string, extra ...string) (int, error) {
	changed := 0
	for _, root := range append([]string{dir}, extra...) {
		if root == "" {
			continue
		}
		err := l.walk(root, true, func(p string, fi fs.FileInfo) error {
			if exposure(fi) == "" {
				return nil
			}
			if err := tighten(p, fi); err != nil {
				return err
			}
			changed++
			return nil
		})
		if err != nil {
			return changed, fmt.Errorf("tightening the data directory's permissions: %w", err)
		}
	}
	return changed, nil
}

// walk calls fn for dir, then for everything below it (all of it
// when deep, else not the files of the object trees). A symbolic link in
// dir itself is followed (fn sees its target's information under the
// link's path); one deeper is seen as a link and not followed.
func (l Layout) walk(dir string, deep bool, fn func(path string, fi fs.FileInfo) error) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := fn(dir, fi); err != nil || !fi.IsDir() {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p) // a top-level link: its target
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone meanwhile, or a dangling link
		}
		if err != nil {
			return err
		}
		if err := fn(p, fi); err != nil {
			return err
		}
		if !fi.IsDir() || (l.Trees[e.Name()] && !deep) {
			continue
		}
		if e.Type()&fs.ModeSymlink != 0 {
			// WalkDir does not enter a link: walk its target.
			if p, err = filepath.EvalSymlinks(p); err != nil {
				return err
			}
		}
		err = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if q == p {
				return nil
			}
			fi, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			return fn(q, fi)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Quote quotes p for a shell command in a message, when it needs it.
func Quote(p string) string {
	if strings.ContainsAny(p, " \t'\"$\\`!*?[]{}()<>|&;#~") {
		return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
	}
	return p
}

// CloseOpenDirs closes (to 0700 and the like) the directories below the
// roots that group or others may enter, when nothing else is open: every
// file in them is closed to others already and every entry is Ward's own
// user's. Nothing could have been read through such a directory but file
// names (a fresh folder made with mkdir, or a test's temporary directory),
// so closing it is safe and saves the operator a step; an open file, or
// one another user owns, is left for Check to refuse. It returns
// the directories it closed.
func (l Layout) CloseOpenDirs(roots ...string) ([]string, error) {
	type open struct {
		path string
		fi   fs.FileInfo
	}
	var dirs []open
	other := false
	for _, root := range roots {
		if root == "" {
			continue
		}
		err := l.walk(root, false, func(p string, fi fs.FileInfo) error {
			switch {
			case exposure(fi) == "":
			case fi.IsDir() && ForeignOwner(fi) == "":
				dirs = append(dirs, open{p, fi})
			default:
				other = true
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("checking permissions: %w", err)
		}
	}
	if other {
		return nil, nil
	}
	var closed []string
	for _, d := range dirs {
		if err := tighten(d.path, d.fi); err != nil {
			return closed, fmt.Errorf("closing the data directory: %w", err)
		}
		closed = append(closed, d.path)
	}
	return closed, nil
}

// CheckKeyFile refuses a private key file that another local user could
// read, as PostgreSQL and OpenSSH do: it must be closed to others, and to
// its group unless root owns it (a group of key readers, such as
// Debian's ssl-cert). A file that cannot be read is left to the code that
// loads it, which says so.
func CheckKeyFile(setting, path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	if why := keyExposure(fi); why != "" {
		return fmt.Errorf("%s %s: a private key %s: chmod 0600 %s", setting, path, why, Quote(path))
	}
	return nil
}

// Outside is p when it is not in dir, else "".
func Outside(dir, p string) string {
	ad, err1 := filepath.Abs(dir)
	ap, err2 := filepath.Abs(p)
	if err1 != nil || err2 != nil {
		return p
	}
	if rel, err := filepath.Rel(ad, ap); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return ""
	}
	return p
}
