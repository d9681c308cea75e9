package crash

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-pacs/ward/test/harness"
)

// startWardLimited starts `ward serve` on dir and port under prlimit with
// an open file limit of nofile (soft and hard), with no loopback any-AE
// opt-in, and waits until it listens.
func startWardLimited(t *testing.T, dir string, port int, nofile int) *harness.Proc {
	t.Helper()
	requireTool(t, "prlimit")
	lim := "--nofile=" + strconv.Itoa(nofile) + ":" + strconv.Itoa(nofile)
	cmd := exec.Command("prlimit", lim, wardBinary(t), "serve", "--data", dir, "--dicom-listen", "127.0.0.1:"+strconv.Itoa(port), "--aet", "WARD", "--min-free", "16MiB", "--http-listen", "127.0.0.1:0")
	w := harness.Start(t, cmd, false)
	w.Port = strconv.Itoa(port)
	w.WaitServing(t)
	return w
}

// TestIdleFloodUnderLowFileLimit (issue 14, item 1): under an open file
// limit of 256, 400 idle connections from 10 loopback addresses, reopened
// as Ward closes them, made `ward serve` exit ("accept4: too many open
// files"): every connection over the association limit got a goroutine
// that held its socket for 5 s, without bound, and an accept error ended
// the accept loop. Now Ward refuses them before spending anything on them,
// keeps running, and a registered peer's DCMTK echoscu gets in during the
// flood (10 of 10) and after it.
func TestIdleFloodUnderLowFileLimit(t *testing.T) {
	requireTool(t, "echoscu")
	dir := harness.DataDir(t)
	if out, err := exec.Command(wardBinary(t), "peer", "add", "MODALITY", "--host", "127.0.0.1", "--allow", "echo", "--data", dir).CombinedOutput(); err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	port := freePort(t)
	w := startWardLimited(t, dir, port, 256)
	addr := "127.0.0.1:" + w.Port
	echo := func() (string, error) {
		cmd := dcmtk("echoscu", "-to", "10", "-aet", "MODALITY", "-aec", "WARD", "127.0.0.1", w.Port)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := echo(); err != nil {
		t.Fatalf("echoscu before the flood: %v\n%s", err, out)
	}

	var wg sync.WaitGroup
	var opened, failedDials atomic.Int64
	stop := make(chan struct{})
	for s := 2; s < 12; s++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(s))}
		for range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := net.Dialer{LocalAddr: src, Timeout: time.Second}
				for range 500 { // bounded: each round lasts 200 ms at least
					if c, err := d.Dial("tcp", addr); err == nil {
						opened.Add(1)
						closed := make(chan struct{})
						go func() {
							var b [1]byte
							_, _ = c.Read(b[:])
							close(closed)
						}()
						select {
						case <-stop:
						case <-closed:
						}
						c.Close()
						<-closed
					} else {
						failedDials.Add(1)
					}
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
		}
	}
	endFlood := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer endFlood()

	time.Sleep(2 * time.Second)
	var fails []string
	for range 10 {
		select {
		case <-w.Done():
			t.Fatalf("ward serve exited during the flood: %v", w.Err())
		default:
		}
		if out, err := echo(); err != nil {
			fails = append(fails, fmt.Sprintf("%v: %s", err, strings.TrimSpace(out)))
		}
		time.Sleep(300 * time.Millisecond)
	}
	endFlood()
	if len(fails) > 0 {
		t.Errorf("the registered peer got in %d times out of 10 during the flood:\n%s", 10-len(fails), strings.Join(fails, "\n"))
	}
	if opened.Load() < 400 {
		t.Fatalf("the flood opened only %d connections (%d dials failed)", opened.Load(), failedDials.Load())
	}
	select {
	case <-w.Done():
		t.Fatalf("ward serve exited: %v", w.Err())
	default:
	}
	if out, err := echo(); err != nil {
		t.Fatalf("echoscu after the flood: %v\n%s", err, out)
	}
	if strings.Contains(w.Log.String(), "too many open files") {
		t.Errorf("ward ran out of file descriptors")
	}
	t.Logf("flood: %d connections opened", opened.Load())
}
