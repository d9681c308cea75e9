//go:build !linux

package admin

import (
	"errors"
	"net"
	"path/filepath"
)

// SocketAddr is the path of dataDir's admin socket, or errPathTooLong.
func SocketAddr(dataDir string) (addr string, done func(), err error) {
	path := filepath.Join(dataDir, Socket)
	if len(path) > maxSocketPath {
		return "", nil, errPathTooLong
	}
	return path, func() {}, nil
}

// peerUID is not available here: administration requests over the socket
// are refused (the offline commands still work with ward serve stopped).
func peerUID(*net.UnixConn) (int, error) {
	return 0, errors.New("peer credentials are not supported on this system")
}
