package crash

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/test/harness"
)

// fill writes a file into dir until the file system is full; removing it
// frees the space.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ballast")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

// TestAuditDiskFull is issue 14 item 7: the audit log on a 2 MiB tmpfs
// that is then filled. Before, one write error stopped the trail for good
// while DIMSE went on unaudited. Now: Ward notices, `ward status` says so,
// C-ECHO is still answered, findscu's C-FIND and storescu's C-STORE are
// refused with A700 and getscu's C-GET with A701, each with a comment (the
// default on_failure = "refuse"), and so is ward study export;
// once space is freed, the log is written again by itself and service
// resumes; `ward audit verify` passes and reports the outage; the records
// of what happened meanwhile (the refusals) are in the log, held in memory
// and written with the outage record: nothing is lost silently.
func TestAuditDiskFull(t *testing.T) {
	requireTool(t, "storescu", "findscu", "getscu", "echoscu")
	auditFS := tinyFS(t)
	data, work := harness.DataDir(t), t.TempDir()
	cfg := filepath.Join(work, "ward.toml")
	toml := fmt.Sprintf("[storage]\nmin_free = \"16MiB\"\n[audit]\npath = %q\n", filepath.Join(auditFS, "audit"))
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWard(t, data, freePort(t), "--config", cfg)
	batch := makeInstances(t, filepath.Join(work, "in"), fmt.Sprintf("1.2.826.0.1.3680043.10.543.9.%d", time.Now().UnixNano()%1e9), 3)
	// -d prints the response's status and Error Comment.
	find := func() (string, bool) {
		return dcmtkRun(t, "findscu", "-d", "-S", "-aet", "CRASHTEST", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID=*",
			"127.0.0.1", w.Port)
	}
	store := func(in *instance) *storescu {
		s := startStorescu(t, w.Port, []string{in.path}, nil, "-d")
		s.wait(t, 30*time.Second)
		return s
	}
	status := func() string {
		out, _ := exec.Command(wardBinary(t), "status", "--data", data, "--config", cfg).CombinedOutput()
		return string(out)
	}

	if s := store(batch[0]); len(s.log.ackedFiles()) != 1 {
		t.Fatalf("store before the disk is full:\n%s", tail(s.log.String(), 30))
	}
	if out, ok := find(); !ok || strings.Contains(out, "0xa700") {
		t.Fatalf("find before the disk is full:\n%s", out)
	}

	ballast := fill(t, auditFS)
	// The next records (this association's) cannot be appended.
	if out, ok := dcmtkRun(t, "echoscu", "-aet", "CRASHTEST", "-aec", "WARD", "127.0.0.1", w.Port); !ok {
		t.Fatalf("echoscu: %s", out)
	}
	w.WaitLog(t, "audit log cannot be written", 10*time.Second)
	if st := status(); !strings.Contains(st, "audit trail:   CANNOT BE WRITTEN") || !strings.Contains(st, "REFUSED") {
		t.Errorf("ward status while the audit log is full:\n%s", st)
	}
	if out, ok := dcmtkRun(t, "echoscu", "-aet", "CRASHTEST", "-aec", "WARD", "127.0.0.1", w.Port); !ok {
		t.Errorf("C-ECHO refused while the audit log is full:\n%s", out)
	}
	out, _ := find()
	if !strings.Contains(out, "0xa700") && !strings.Contains(strings.ToLower(out), "out of resources") {
		t.Errorf("C-FIND answered while the audit log is full:\n%s", out)
	}
	if !strings.Contains(out, "audit trail cannot be written") {
		t.Errorf("C-FIND refusal without its comment:\n%s", out)
	}
	s := store(batch[1])
	if len(s.log.ackedFiles()) != 0 || !strings.Contains(s.log.String(), "0xa700") || !strings.Contains(s.log.String(), "audit trail cannot be written") {
		t.Errorf("C-STORE while the audit log is full:\n%s", tail(s.log.String(), 30))
	}

	gout, _ := dcmtkRun(t, "getscu", "-d", "-S", "-aet", "CRASHTEST", "-aec", "WARD", "-od", t.TempDir(), "-k", "QueryRetrieveLevel=STUDY",
		"-k", "StudyInstanceUID=1.2.3", "127.0.0.1", w.Port)
	if !strings.Contains(gout, "0xa701") || !strings.Contains(gout, "audit trail cannot be written") {
		t.Errorf("C-GET while the audit log is full:\n%s", gout)
	}
	// An export (patient data out of the archive) waits too.
	eout, err := exec.Command(wardBinary(t), "study", "export", "1.2.3", "--out", filepath.Join(work, "export"), "--data", data, "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(eout), "audit trail cannot be written") {
		t.Errorf("ward study export while the audit log is full: %v\n%s", err, eout)
	}

	// Free the space: the next request has the log tried again at once
	// (at most every 50 ms; the writer's own retry is every second), and
	// is served.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if out, ok := find(); !ok || strings.Contains(out, "0xa700") {
		t.Errorf("find after space was freed:\n%s", out)
	}
	w.WaitLog(t, "audit log written again", 10*time.Second)
	if s := store(batch[1]); len(s.log.ackedFiles()) != 1 {
		t.Errorf("store after space was freed:\n%s", tail(s.log.String(), 30))
	}
	if st := status(); strings.Contains(st, "audit trail:") {
		t.Errorf("ward status after recovery:\n%s", st)
	}
	if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
		t.Fatalf("ward exit: %v", err)
	}

	vout, err := exec.Command(wardBinary(t), "audit", "verify", "--data", data, "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(vout), "chain intact, with 1 outage(s) recorded") || !strings.Contains(string(vout), "0 records lost") {
		t.Fatalf("ward audit verify: %v\n%s", err, vout)
	}
	t.Logf("ward audit verify:\n%s", vout)
	// The refusals made while the disk was full are in the log (the
	// Query record says why, in the archive's words: the DIMSE status is
	// the front end's).
	sout, err := exec.Command(wardBinary(t), "audit", "search", "--data", data, "--config", cfg, "--event", "query", "--xml").CombinedOutput()
	if err != nil || !strings.Contains(string(sout), `EventOutcomeIndicator="4"`) || !strings.Contains(string(sout), "<EventOutcomeDescription>audit trail cannot be written") {
		t.Errorf("the refused C-FIND is not in the audit log: %v\n%s", err, sout)
	}
	sout, _ = exec.Command(wardBinary(t), "audit", "search", "--data", data, "--config", cfg, "--event", "authentication").CombinedOutput()
	// store, find, echo (full), echo, find, store, get, find, store: 9.
	if n := strings.Count(string(sout), "\n"); n != 9 {
		t.Errorf("%d authentication records, want 9:\n%s", n, sout)
	}
}

// TestAuditDiskFullContinue: with on_failure = "continue", findscu is
// answered while the audit log's disk is full; its records are held and
// written once space is freed, with the outage record.
func TestAuditDiskFullContinue(t *testing.T) {
	requireTool(t, "findscu", "echoscu")
	auditFS := tinyFS(t)
	data, work := harness.DataDir(t), t.TempDir()
	cfg := filepath.Join(work, "ward.toml")
	toml := fmt.Sprintf("[storage]\nmin_free = \"16MiB\"\n[audit]\npath = %q\non_failure = \"continue\"\n", filepath.Join(auditFS, "audit"))
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWard(t, data, freePort(t), "--config", cfg)
	ballast := fill(t, auditFS)
	if out, ok := dcmtkRun(t, "echoscu", "-aet", "CRASHTEST", "-aec", "WARD", "127.0.0.1", w.Port); !ok {
		t.Fatalf("echoscu: %s", out)
	}
	w.WaitLog(t, "audit log cannot be written", 10*time.Second)
	out, ok := dcmtkRun(t, "findscu", "-d", "-S", "-aet", "CRASHTEST", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=*", "127.0.0.1", w.Port)
	if !ok || strings.Contains(out, "0xa700") {
		t.Errorf("C-FIND refused with on_failure = continue:\n%s", out)
	}
	os.Remove(ballast)
	w.WaitLog(t, "audit log written again", 10*time.Second)
	if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
		t.Fatalf("ward exit: %v", err)
	}
	vout, err := exec.Command(wardBinary(t), "audit", "verify", "--data", data, "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(vout), "1 outage(s)") {
		t.Fatalf("ward audit verify: %v\n%s", err, vout)
	}
	sout, _ := exec.Command(wardBinary(t), "audit", "search", "--data", data, "--config", cfg, "--event", "query").CombinedOutput()
	if strings.Count(string(sout), "\n") != 1 {
		t.Errorf("the C-FIND answered during the outage is not in the log:\n%s", sout)
	}
}
