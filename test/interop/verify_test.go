package interop

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/admin"
)

// TestStudyVerify: objects sent by DCMTK storescu verify clean with `ward
// study verify`, through a running ward serve and, once it is stopped, on
// the data directory itself; an object altered on disk afterwards, and an
// object file no index row names, are named, with why, and the command
// exits 1.
func TestStudyVerify(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	var files []string
	for _, n := range []string{"CT_small.dcm", "MR_small.dcm", "rtstruct.dcm", "ExplVR_BigEnd.dcm", "rtplan.dcm"} {
		files = append(files, filepath.Join(pydicomTestFiles, n))
	}
	if out, err := dcmtk("storescu", append([]string{"-aec", "WARD", w.host, w.port}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if o, code := wardCLI(t, "study", "verify", "--data", w.dir); code != 0 || !strings.Contains(o, "verified 5 instances") || !strings.Contains(o, ": 0 with problems") {
		t.Fatalf("verify: %d %s", code, o)
	}
	// A caller that hangs up (an interrupted ward study verify) ends the
	// verification it asked for, here one capped at a byte a second.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := admin.RemoteVerify(ctx, w.dir, archive.VerifyOptions{MaxRate: 1})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a verification at a byte a second returned %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); strings.Count(w.log.String(), `msg=verified`) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the verification goes on after its caller hung up:\n%s", w.log.String())
		}
	}
	if !strings.Contains(w.log.String(), "context canceled") {
		t.Fatalf("the verification did not end for the hang-up:\n%s", w.log.String())
	}
	// Alter one stored object: one bit, near its end, once the objects
	// have moved from pending/ to objects/ (just after their C-STOREs
	// were answered).
	var stored []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		stored = stored[:0]
		filepath.WalkDir(filepath.Join(w.dir, "objects"), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".dcm") {
				stored = append(stored, p)
			}
			return nil
		})
		if len(stored) == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored files: %v", stored)
		}
	}
	b, err := os.ReadFile(stored[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-10] ^= 1
	if err := os.WriteFile(stored[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSuffix(filepath.Base(stored[0]), ".dcm")
	check := func(o string, code int) {
		t.Helper()
		if code != 1 || !strings.Contains(o, "object "+key+"): checksum") || !strings.Contains(o, ": 1 with problems") {
			t.Fatalf("verify after the change: %d %s", code, o)
		}
	}
	check(wardCLI(t, "study", "verify", "--data", w.dir))
	w.stop()
	check(wardCLI(t, "study", "verify", "--data", w.dir))
	// A copy of an object under a name no index row has (as a restore of
	// old files, or a lost deletion, would leave) is found.
	stray := "0123456789abcdef0123456789abcdef"
	if err := os.MkdirAll(filepath.Join(w.dir, "objects", stray[:2], stray[2:4]), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.dir, "objects", stray[:2], stray[2:4], stray+".dcm"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if o, code := wardCLI(t, "study", "verify", "--data", w.dir); code != 1 || !strings.Contains(o, "object "+stray+": a stored object no index row names") || !strings.Contains(o, ": 2 with problems") {
		t.Fatalf("verify with a stray object: %d %s", code, o)
	}
	// One study: the CT alone is clean or is the one changed.
	o, code := wardCLI(t, "study", "verify", studyOf(t, files[0]), "--max-rate", "50", "--data", w.dir)
	if !strings.Contains(o, "verified 1 instance,") || (code == 0) == strings.Contains(o, key) {
		t.Fatalf("verify one study: %d %s", code, o)
	}
}

// TestStatus: `ward status` of a serving Ward (over its admin socket) and
// of a stopped one counts what DCMTK storescu sent, and gives the disk's
// free space and reserve.
func TestStatus(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	files := []string{filepath.Join(pydicomTestFiles, "CT_small.dcm"), filepath.Join(pydicomTestFiles, "MR_small.dcm")}
	if out, err := dcmtk("storescu", append([]string{"-aec", "WARD", w.host, w.port}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	node, err := os.ReadFile(filepath.Join(w.dir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	o, code := wardCLI(t, "status", "--data", w.dir)
	if code != 0 || !strings.Contains(o, "running on") || strings.Contains(o, "not running") || !strings.Contains(o, "node:          "+strings.TrimSpace(string(node))) ||
		!strings.Contains(o, "2 patients, 2 studies, 2 series, 2 instances") || !strings.Contains(o, "16 MiB kept in reserve; C-STOREs accepted") {
		t.Fatalf("status: %d\n%s", code, o)
	}
	w.stop()
	o, code = wardCLI(t, "status", "--json", "--data", w.dir)
	var st struct {
		Serving      bool
		Node         string
		Capabilities []string
		Counts       struct{ Instances int64 }
		DiskFree     int64 `json:"disk_free"`
	}
	if err := json.Unmarshal([]byte(o), &st); code != 0 || err != nil || st.Serving || st.Counts.Instances != 2 || st.DiskFree <= 0 ||
		st.Node != strings.TrimSpace(string(node)) || !slices.Contains(st.Capabilities, "Snapshotter") {
		t.Fatalf("status of the stopped Ward: %d %v\n%s", code, err, o)
	}
}
