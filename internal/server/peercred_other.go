//go:build !linux

package server

import (
	"errors"
	"net"
)

// peerUID is not available here: administration requests over the socket
// are refused (the offline commands still work with ward serve stopped).
func peerUID(*net.UnixConn) (int, error) {
	return 0, errors.New("peer credentials are not supported on this system")
}
