package crash

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloadsPeers: `ward peer add` edits the data directory's
// ward.toml and a running `ward serve` picks the peer up on SIGHUP.
func TestSIGHUPReloadsPeers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // made by ward peer add, 0700
	if out, err := exec.Command(wardBinary(t), "peer", "add", "FIRST", "--host", "127.0.0.1", "--port", "11119", "--data", dir).CombinedOutput(); err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	w := startWard(t, dir, freePort(t))
	if out, err := exec.Command(wardBinary(t), "peer", "add", "SECOND", "--host", "127.0.0.1", "--port", "11120", "--allow", "echo,move", "--data", dir).CombinedOutput(); err != nil {
		t.Fatalf("peer add: %v\n%s", err, out)
	}
	if err := w.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	reloaded := regexp.MustCompile(`msg="configuration reloaded" node=\S+ peers=2`)
	for !reloaded.MatchString(w.Log.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged:\n%s", w.Log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-w.Done():
		t.Fatalf("ward exited on SIGHUP: %v", w.Err())
	default:
	}
	if out, err := exec.Command(wardBinary(t), "peer", "list", "--data", dir).CombinedOutput(); err != nil || !strings.Contains(string(out), "SECOND") {
		t.Fatalf("peer list: %v\n%s", err, out)
	}
}
