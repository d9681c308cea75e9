package fsblob

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing a range back to disk
// without waiting (sync_file_range SYNC_FILE_RANGE_WRITE).
func startWriteback(f *os.File, off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// inodeNumber is f's inode number.
func inodeNumber(f *os.File) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// spreadSubdirs sets the ext4 "top of directory hierarchy" flag
// (FS_TOPDIR_FL, chattr +T) on dir.
func spreadSubdirs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return err
	}
	if flags&fsTopdirFL != 0 {
		return nil
	}
	return unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsTopdirFL))
}

// space is the filesystem's room for an unprivileged writer (f_bavail)
// and its size.
func space(dir string) (free, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// fsTopdirFL is FS_TOPDIR_FL of <linux/fs.h>.
const fsTopdirFL = 0x00020000

// intentAttr is the extended attribute holding a blob's intent record: a
// short name, so that name and record fit in the inode (ext4: about 100
// bytes with 256-byte inodes) and committing needs no xattr block.
const intentAttr = "user.w"

func setIntent(f *os.File, b []byte) error {
	return unix.Fsetxattr(int(f.Fd()), intentAttr, b, 0)
}

func getIntent(path string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Getxattr(path, intentAttr, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 64<<10 {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if errors.Is(err, unix.ENODATA) {
			return nil, errNoIntent
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
