//go:build linux

// Package lazyfs is a FUSE file system for tests that simulates a power
// cut: it loses whatever was not made durable by fsync, in the manner of
// LazyFS.
//
// Every operation passes through to a "live" directory on the real disk,
// so the programs using the mount see an ordinary file system. Beside it
// lazyfs keeps the durable image, the state a disk would be left in by a
// power cut at this moment:
//
//   - a file's bytes, mode and user extended attributes become durable when
//     the file is fsynced (fsync or fdatasync, on any descriptor);
//   - a directory's entries (creates, links, renames, unlinks, mkdir,
//     rmdir within it) become durable when the directory is fsynced; a file
//     or directory reached by a durable entry but never fsynced itself is
//     empty in the image.
//
// This is stricter than ext4 with a journal (where fsync of a new file also
// commits its directory entry, and a rename is atomic), and is what POSIX
// and the Linux man pages promise: a rename is in the image with each
// directory's fsync, so until both are synced the image may hold the old
// name, the new one, both (a hard link) or neither. Writes are in the
// image whole or not at all (no torn pages), and a disk that acknowledges
// a flush it did not make is not modelled. Files are told apart by inode number
// and birth time, so an inode number reused after an unlink is a new file.
//
// Snapshot writes the durable image to a directory: after killing the
// programs that used the mount, that directory is what a restart after a
// power cut would find. SQLite's -shm file is shared-mapped: lazyfs mounts
// without direct I/O, so the kernel supports shared writable mappings, and
// the -shm is, as it should be, never durable beyond what was fsynced.
//
// Mounting calls mount(2) directly (no fusermount), so it needs root (or
// CAP_SYS_ADMIN) and /dev/fuse.
package lazyfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// id tells files apart: an inode number can be reused, with a new birth
// time.
type id struct {
	ino   uint64
	birth int64 // ns
}

// entry is one durable directory entry.
type entry struct {
	id     id
	mode   uint32 // type and permissions
	target string // symbolic links
}

// FS is a mounted lazyfs.
type FS struct {
	live, mnt, shadow string
	server            *fuse.Server

	mu     sync.Mutex
	root   id
	files  map[id]string           // durable bytes of a file: a file under shadow
	dirs   map[id]map[string]entry // durable entries of a directory
	nextID int

	fileSyncs, dirSyncs atomic.Int64
	noXattrs            atomic.Bool
}

// RefuseXattrs makes setting an extended attribute fail with ENOTSUP, as
// on a file system that keeps none.
func (l *FS) RefuseXattrs(refuse bool) { l.noXattrs.Store(refuse) }

// Mount mounts a lazyfs at mnt over the live directory live. Everything
// already in live is durable. shadow is an empty directory, on the real
// disk, where lazyfs keeps durable file contents.
func Mount(live, mnt, shadow string) (*FS, error) {
	l := &FS{live: live, mnt: mnt, shadow: shadow, files: map[id]string{}, dirs: map[id]map[string]entry{}}
	var err error
	if l.root, err = statID(live, 0); err != nil {
		return nil, err
	}
	if err := l.syncTree(live); err != nil {
		return nil, fmt.Errorf("lazyfs: initial image: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(live, &st); err != nil {
		return nil, err
	}
	lr := &fs.LoopbackRoot{Path: live, Dev: uint64(st.Dev)}
	lr.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, l: l}
	}
	lr.RootNode = lr.NewNode(lr, nil, "", &st)
	l.server, err = fs.Mount(mnt, lr.RootNode, &fs.Options{
		MountOptions: fuse.MountOptions{
			// mount(2) itself, as root: no fusermount needed.
			DirectMountStrict: true,
			FsName:            "lazyfs",
			Name:              "lazyfs",
			MaxWrite:          1 << 20,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("lazyfs: mount %s: %w", mnt, err)
	}
	return l, nil
}

// Dir is the mount point.
func (l *FS) Dir() string { return l.mnt }

// FileSyncs is the number of fsyncs of files so far.
func (l *FS) FileSyncs() int64 { return l.fileSyncs.Load() }

// DirSyncs is the number of fsyncs of directories so far.
func (l *FS) DirSyncs() int64 { return l.dirSyncs.Load() }

// Unmount unmounts the file system; the live directory keeps the state the
// programs saw (as after a clean shutdown followed by sync).
func (l *FS) Unmount() error {
	var err error
	for range 100 {
		if err = l.server.Unmount(); err == nil {
			l.server.Wait()
			return nil
		}
		time.Sleep(50 * time.Millisecond) // EBUSY: a descriptor is being closed
	}
	return fmt.Errorf("lazyfs: unmount %s: %w", l.mnt, err)
}

// Snapshot writes the durable image into dst, which must not exist: the
// state a power cut now would leave.
func (l *FS) Snapshot(dst string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	m := &materializer{l: l, seen: map[id]bool{}, linked: map[id]string{}}
	if err := m.dir(l.root, dst); err != nil {
		return fmt.Errorf("lazyfs: snapshot: %w", err)
	}
	return nil
}

type materializer struct {
	l      *FS
	seen   map[id]bool   // directories written
	linked map[id]string // files written, at their first name
}

func (m *materializer) dir(d id, path string) error {
	if m.seen[d] {
		return nil // a directory renamed between two synced parents
	}
	m.seen[d] = true
	for name, e := range m.l.dirs[d] {
		p := filepath.Join(path, name)
		perm := os.FileMode(e.mode & 0o7777)
		switch e.mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			if m.seen[e.id] {
				continue
			}
			if err := os.Mkdir(p, perm); err != nil {
				return err
			}
			if err := m.dir(e.id, p); err != nil {
				return err
			}
		case syscall.S_IFREG:
			if first, ok := m.linked[e.id]; ok {
				if err := os.Link(first, p); err != nil {
					return err
				}
				continue
			}
			if err := m.file(e.id, p, perm); err != nil {
				return err
			}
			m.linked[e.id] = p
		case syscall.S_IFLNK:
			if err := os.Symlink(e.target, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// file writes the durable content of a file at p: empty if it was never
// fsynced.
func (m *materializer) file(f id, p string, perm os.FileMode) error {
	src, ok := m.l.files[f]
	if !ok {
		out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return err
		}
		return out.Close()
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = copyXattrs(int(out.Fd()), int(in.Fd()))
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncTree makes everything under path durable, as sync(2) would.
func (l *FS) syncTree(path string) error {
	return filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return l.syncDir(p)
		case d.Type().IsRegular():
			return l.syncFile(p)
		}
		return nil
	})
}

// syncDir records the entries of the live directory p as durable.
func (l *FS) syncDir(p string) error {
	l.dirSyncs.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	d, err := statID(p, 0)
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	durable := make(map[string]entry, len(ents))
	for _, de := range ents {
		cp := filepath.Join(p, de.Name())
		var x unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, cp, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				continue
			}
			return err
		}
		e := entry{id: idOf(&x), mode: uint32(x.Mode)}
		if e.mode&syscall.S_IFMT == syscall.S_IFLNK {
			if e.target, err = os.Readlink(cp); err != nil {
				return err
			}
		}
		durable[de.Name()] = e
	}
	l.dirs[d] = durable
	return nil
}

// syncFile records the live file p (a path, or /proc/self/fd/N) as
// durable: its bytes, mode and user extended attributes.
func (l *FS) syncFile(p string) error {
	l.fileSyncs.Add(1)
	in, err := os.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := statID("", int(in.Fd()))
	if err != nil {
		return err
	}
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	dst, ok := l.files[f]
	if !ok {
		l.nextID++
		dst = filepath.Join(l.shadow, strconv.Itoa(l.nextID))
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(fi.Mode().Perm())
	}
	if err == nil {
		err = copyXattrs(int(out.Fd()), int(in.Fd()))
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	l.files[f] = dst
	return nil
}

// copyXattrs makes the user extended attributes of dst those of src.
func copyXattrs(dst, src int) error {
	have, err := xattrNames(dst)
	if err != nil {
		return err
	}
	want, err := xattrNames(src)
	if err != nil {
		return err
	}
	for _, name := range have {
		if err := unix.Fremovexattr(dst, name); err != nil {
			return err
		}
	}
	for _, name := range want {
		sz, err := unix.Fgetxattr(src, name, nil)
		if err != nil {
			return err
		}
		v := make([]byte, sz)
		if sz, err = unix.Fgetxattr(src, name, v); err != nil {
			return err
		}
		if err := unix.Fsetxattr(dst, name, v[:sz], 0); err != nil {
			return err
		}
	}
	return nil
}

func xattrNames(fd int) ([]string, error) {
	sz, err := unix.Flistxattr(fd, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, syscall.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Flistxattr(fd, buf); err != nil {
		return nil, err
	}
	var names []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if strings.HasPrefix(n, "user.") {
			names = append(names, n)
		}
	}
	return names, nil
}

// statID identifies the file at path (not following a final symbolic
// link), or open as fd when path is empty.
func statID(path string, fd int) (id, error) {
	var x unix.Statx_t
	var err error
	if path == "" {
		err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x)
	} else {
		err = unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x)
	}
	if err != nil {
		return id{}, err
	}
	return idOf(&x), nil
}

func idOf(x *unix.Statx_t) id {
	return id{ino: x.Ino, birth: x.Btime.Sec*1e9 + int64(x.Btime.Nsec)}
}

// node is a loopback node whose fsync updates the durable image instead
// of syncing the live directory (which is scratch).
type node struct {
	fs.LoopbackNode
	l *FS
}

var _ fs.NodeFsyncer = (*node)(nil)

// Fsync handles FUSE_FSYNC and FUSE_FSYNCDIR.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	p := filepath.Join(n.RootData.Path, n.Path(nil))
	var err error
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR {
		err = n.l.syncDir(p)
	} else {
		if pf, ok := fh.(fs.FilePassthroughFder); ok {
			if fd, ok := pf.PassthroughFd(); ok {
				p = "/proc/self/fd/" + strconv.Itoa(fd)
			}
		}
		err = n.l.syncFile(p)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	return 0
}

// MountTemp mounts a lazyfs with its live, shadow and mount directories
// made under dir.
func MountTemp(dir string) (*FS, error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("no FUSE: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("mounting needs root")
	}
	live, err := os.MkdirTemp(dir, "live")
	if err != nil {
		return nil, err
	}
	shadow, err := os.MkdirTemp(dir, "shadow")
	if err != nil {
		return nil, err
	}
	mnt, err := os.MkdirTemp(dir, "mnt")
	if err != nil {
		return nil, err
	}
	return Mount(live, mnt, shadow)
}

var _ fs.NodeOpendirHandler = (*node)(nil)

// OpendirHandle wraps the loopback's directory handle, whose fsyncdir
// would sync the live directory, so that fsyncdir comes to Fsync.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, ff, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return fh, ff, errno
	}
	return &dirHandle{fh: fh, n: n}, ff, 0
}

type dirHandle struct {
	fh fs.FileHandle
	n  *node
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return d.fh.(fs.FileReaddirenter).Readdirent(ctx)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.fh.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.fh.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.n.Fsync(ctx, nil, flags)
}

var _ fs.NodeSetxattrer = (*node)(nil)

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.l.noXattrs.Load() {
		return syscall.ENOTSUP
	}
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}
