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
)

// startWardLimited starts `ward serve` on dir and port under prlimit with
// an open file limit of nofile (soft and hard), with no loopback any-AE
// opt-in, and waits until it listens.
func startWardLimited(t *testing.T, dir string, port int, nofile int) *wardProc {
	t.Helper()
	requireTool(t, "prlimit")
	lim := "--nofile=" + strconv.Itoa(nofile) + ":" + strconv.Itoa(nofile)
	cmd := exec.Command("prlimit", lim, wardBinary(t), "serve", "--data", dir, "--dicom-listen", "127.0.0.1:"+strconv.Itoa(port), "--aet", "WARD", "--min-free", "16MiB")
	w := &wardProc{cmd: cmd, port: strconv.Itoa(port), log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.log, w.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		w.kill()
		if t.Failed() {
			t.Logf("ward log (pid %d):\n%s", cmd.Process.Pid, w.log.String())
		}
	})
	deadline := time.After(20 * time.Second)
	for !strings.Contains(w.log.String(), "ward serving") {
		select {
		case <-w.done:
			t.Fatalf("ward serve exited at start: %v\n%s", w.err, w.log.String())
		case <-deadline:
			t.Fatalf("ward serve not listening after 20s:\n%s", w.log.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
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
	dir := t.TempDir()
	if out, err := exec.Command(wardBinary(t), "peer", "add", "MODALITY", "--host", "127.0.0.1", "--allow", "echo", "--data", dir).CombinedOutput(); err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	port := freePort(t)
	w := startWardLimited(t, dir, port, 256)
	addr := "127.0.0.1:" + w.port
	echo := func() (string, error) {
		cmd := exec.Command("echoscu", "-to", "10", "-aet", "MODALITY", "-aec", "WARD", "127.0.0.1", w.port)
		cmd.Env = append(cmd.Environ(), "TCP_NODELAY=1")
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
		case <-w.done:
			t.Fatalf("ward serve exited during the flood: %v", w.err)
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
	case <-w.done:
		t.Fatalf("ward serve exited: %v", w.err)
	default:
	}
	if out, err := echo(); err != nil {
		t.Fatalf("echoscu after the flood: %v\n%s", err, out)
	}
	if strings.Contains(w.log.String(), "too many open files") {
		t.Errorf("ward ran out of file descriptors")
	}
	t.Logf("flood: %d connections opened", opened.Load())
}
