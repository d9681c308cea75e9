package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitListen waits up to 30 s until something accepts TCP connections on
// the loopback port.
func WaitListen(t testing.TB, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			_ = c.Close()
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("nothing listens on %d: %v", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AssertLoopbackOnly fails the test when something listens on port on an
// address other than loopback (the shim did not take).
func AssertLoopbackOnly(t testing.TB, port int) {
	t.Helper()
	hexPort := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" || !strings.HasSuffix(fields[1], hexPort) {
				continue
			}
			addr := strings.TrimSuffix(fields[1], hexPort)
			if addr != "0100007F" && addr != "00000000000000000000000001000000" {
				t.Fatalf("port %d listens on %s (%s), not loopback only", port, addr, f)
			}
		}
	}
}
