package interop

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
)

// gdcmscu runs GDCM's gdcmscu against Ward, bounded in time: a gdcmscu that
// waits forever on Ward's answer is the bug this guards against.
func gdcmscu(t *testing.T, w *ward, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append([]string{"--aetitle", "GDCM", "--call", "WARD"}, args...)
	// stdbuf: gdcmscu prints the matches before it crashes (see
	// gdcmReleaseCrash), and the crash loses a buffered stdout.
	cmd := exec.CommandContext(ctx, "stdbuf", append([]string{"-o0", "gdcmscu"}, append(args, w.host, w.port)...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("gdcmscu %s: no answer within 30 s (hangs)\n%s", strings.Join(args, " "), out)
	}
	if err != nil && !strings.Contains(string(out), gdcmReleaseCrash) {
		t.Fatalf("gdcmscu %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// gdcmReleaseCrash is how gdcmscu 3.0.21 (Debian 12) ends every
// association, against DCMTK's storescp as against Ward: it aborts on the
// A-RELEASE-RP, after the operation. The operation's outcome is judged
// from its output instead of the exit status.
const gdcmReleaseCrash = "ProtocolStream as nullptr is invalid"

// TestRegressionGdcmscu: GDCM's gdcmscu, a registered peer, echoes, stores
// and queries `ward serve`. gdcmscu waited forever on C-FIND responses
// whose identifier came in the command's P-DATA-TF (issue 14, item 19).
func TestRegressionGdcmscu(t *testing.T) {
	requireTool(t, "gdcmscu", "storescu")
	requirePydicom(t)
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.Peers = []config.Peer{{AETitle: "GDCM", Host: "127.0.0.1", Allow: []string{"echo", "store", "find"}}}
	})
	if out := gdcmscu(t, w, "--echo", "-D"); !regexp.MustCompile(`\(0000,0900\) \?\? \(US\) 0 `).MatchString(out) {
		t.Fatalf("gdcmscu --echo: no success status:\n%s", out)
	}

	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	for _, uid := range uidsOf(a, "P2") {
		gdcmscu(t, w, "--store", "-i", originals[uid])
	}
	for _, uid := range uidsOf(a, "P2") {
		if ok, diff := datasetsEqual(t, originals[uid], w.storedCopy(t, uid)); !ok {
			t.Errorf("%s stored differently:\n%s", uid, diff)
		}
	}
	// P1 through storescu under the same registered AE title.
	var p1 []string
	for _, uid := range uidsOf(a, "P1") {
		p1 = append(p1, originals[uid])
	}
	if out, err := dcmtk("storescu", append([]string{"-aet", "GDCM", "-aec", "WARD", w.host, w.port}, p1...)...).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}

	// gdcmscu prints the matches only after the release, where it
	// crashes: its debug log shows the responses as they arrive (each
	// command set is printed twice).
	pending := regexp.MustCompile(`\(0000,0900\) \?\? \(US\) 65280 `)
	for _, q := range []struct {
		args    []string
		matches int
	}{
		{[]string{"--study", "--key", "10,20=P2", "--key", "20,d="}, 2},
		// The query that hung: one match, at patient level.
		{[]string{"--patient", "--key", "10,20=P1", "--key", "10,10="}, 1},
	} {
		out := gdcmscu(t, w, append(append([]string{"--find", "--patientroot"}, q.args...), "-D")...)
		if !strings.Contains(out, "C-Find was successful.") {
			t.Errorf("gdcmscu --find %v: no final success:\n%s", q.args, out)
		}
		if n := len(pending.FindAllString(out, -1)) / 2; n != q.matches {
			t.Errorf("gdcmscu --find %v: %d pending responses, want %d:\n%s", q.args, n, q.matches, out)
		}
	}
}
