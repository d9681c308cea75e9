package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
)

// TestProc: a child's output is kept, WaitLog sees it, Stop returns the
// exit, and WaitLog fails at once (not at its deadline) on a child that
// exited without saying it.
func TestProc(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", "echo ready; exec sleep 60"), false)
	p.WaitLog(t, "ready", 10*time.Second)
	if p.Exited() {
		t.Fatal("exited early")
	}
	err, _ := p.Stop(t, syscall.SIGTERM, 10*time.Second)
	if err == nil || !p.Exited() {
		t.Fatalf("after SIGTERM: %v, exited %v", err, p.Exited())
	}

	q := Start(t, exec.Command("sh", "-c", "echo bye"), false)
	start := time.Now()
	ft := &fatalT{TB: t}
	func() {
		defer func() { _ = recover() }()
		q.WaitLog(ft, "never", time.Minute)
	}()
	if !ft.failed || time.Since(start) > 30*time.Second || !strings.Contains(ft.msg, "exited before logging") {
		t.Errorf("WaitLog on an exited child: failed %v after %s: %s", ft.failed, time.Since(start), ft.msg)
	}
}

// fatalT records a Fatalf instead of ending the test.
type fatalT struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fatalT) Helper() {}

func (f *fatalT) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = strings.TrimSpace(strings.SplitN(fmt.Sprintf(format, args...), "\n", 2)[0])
	panic("fatal")
}

// TestDataDir: the data directory is closed to other users, as ward serve
// requires.
func TestDataDir(t *testing.T) {
	fi, err := os.Stat(DataDir(t))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi.Mode(), err)
	}
}

// TestAuditRecordsMissingLog: no log yet is no records, not an error.
func TestAuditRecordsMissingLog(t *testing.T) {
	if recs := AuditRecords(t.TempDir()); len(recs) != 0 {
		t.Fatalf("%d records", len(recs))
	}
	if _, ok := PollAudit(t.TempDir(), 0, func([]audit.Record) bool { return false }); ok {
		t.Fatal("want not satisfied, yet ok")
	}
}
