package admin

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// SocketAddr is the address of dataDir's admin socket. Where the path is too
// long for a Unix socket address, it names the file through an open
// descriptor of dataDir, /proc/self/fd/N/admin.sock, valid until done is
// called.
func SocketAddr(dataDir string) (addr string, done func(), err error) {
	path := filepath.Join(dataDir, Socket)
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	d, err := os.Open(dataDir)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), Socket), func() { d.Close() }, nil
}

// peerUID is the user ID of the process at the other end of c.
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return int(cred.Uid), nil
}
