package crash

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStowKillAfterAck: nothing a STOW-RS 200 acknowledged is lost. A
// client sends instances two per request into `ward serve` while Ward is
// killed (SIGKILL) mid-stream; Ward restarts on the same directory
// (recovery runs) and every instance of every request answered 200 is
// indexed with exactly the data set sent.
func TestStowKillAfterAck(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped under -short")
	}
	work := t.TempDir()
	dir := filepath.Join(work, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ins := makeInstances(t, filepath.Join(work, "in"), fmt.Sprintf("1.2.826.0.1.3680043.10.545.%d", time.Now().UnixNano()%1e6), 60)
	bin := wardBinary(t)
	ward := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--data", dir)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ward %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	ward("a long passcode\n", "user", "add", "up", "--role", "uploader")
	tok := ward("", "token", "issue", "up", "--scope", "write")

	hport := freePort(t)
	w := startWard(t, dir, freePort(t), "--http-listen", "127.0.0.1:"+strconv.Itoa(hport))
	url := "http://127.0.0.1:" + strconv.Itoa(hport) + "/dicom-web/studies"
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(hport)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("web listener not up")
		}
		time.Sleep(20 * time.Millisecond)
	}

	acked := map[string]*instance{}
	const killAfter = 10 // acknowledged requests
	oks := 0
	for i := 0; i+1 < len(ins); i += 2 {
		var body bytes.Buffer
		for _, in := range ins[i : i+2] {
			data, err := os.ReadFile(in.path)
			if err != nil {
				t.Fatal(err)
			}
			body.WriteString("--k\r\nContent-Type: application/dicom\r\n\r\n")
			body.Write(data)
			body.WriteString("\r\n")
		}
		body.WriteString("--k--\r\n")
		req, _ := http.NewRequest(http.MethodPost, url, &body)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=k`)
		if oks == killAfter {
			// Killed while this request is in flight.
			go func() { time.Sleep(time.Millisecond); w.Kill() }()
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			break // killed
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			oks++
			for _, in := range ins[i : i+2] {
				acked[in.uid] = in
			}
		} else if oks < killAfter {
			t.Fatalf("request %d: status %d", i/2, resp.StatusCode)
		}
	}
	w.Kill()
	if oks < killAfter {
		t.Fatalf("only %d requests acknowledged", oks)
	}
	w = startWard(t, dir, freePort(t))
	if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
		t.Fatalf("ward after recovery: exit %v", err)
	}
	n := verify(t, dir, acked)
	t.Logf("%d requests (%d instances) acknowledged before SIGKILL; %d indexed after restart", oks, len(acked), n)
}
