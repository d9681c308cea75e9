package crash

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

// studyCountRE finds Number of Study Related Instances in findscu's
// output.
var studyCountRE = regexp.MustCompile(`\(0020,1208\) IS \[\s*(\d+)\s*\]`)

// TestKillMidDelete: a study deletion is whole or not made, and audited
// once made, whatever the moment ward serve is killed. Regression: a kill
// during ward study delete left 2 instances of 10 deleted, 8 in place, and
// no Study Deleted record. Rounds of: a study of many instances stored by
// DCMTK storescu (beside one that stays), `ward study delete` of it sent
// to the serving Ward, and ward serve killed (SIGKILL) a random moment
// later (before the request, while the index commits, while the objects
// are removed, after). After a restart, DCMTK findscu finds the study
// with all its instances or not at all; if not at all, the audit trail
// has its Study Deleted record; if all, a second ward study delete
// deletes it. Either way the study is then wholly gone, audited, and
// ward study verify finds the archive clean (no object left behind).
func TestKillMidDelete(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped under -short")
	}
	requireTool(t, "storescu", "findscu")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0xde1e7e))
	bin := wardBinary(t)
	work := t.TempDir()
	dir := filepath.Join(work, "data")
	ward := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	const perStudy = 1000
	base := fmt.Sprintf("1.2.826.0.1.3680043.10.543.%d", seed%1e6)
	store := func(w *harness.Proc, round int) string {
		t.Helper()
		study := fmt.Sprintf("%s.7%d", base, round)
		var paths []string
		for _, in := range makeStudy(t, filepath.Join(work, fmt.Sprint("in", round)), study+".1", study, perStudy) {
			paths = append(paths, in.path)
		}
		s := startStorescu(t, w.Port, paths, nil)
		s.wait(t, 120*time.Second)
		if s.err != nil {
			t.Fatalf("round %d: storescu: %v\n%s", round, s.err, s.log.String())
		}
		return study
	}
	// instances is how many instances of study findscu finds (0: none).
	instances := func(w *harness.Proc, study string) int {
		t.Helper()
		cmd := dcmtk("findscu", "-S", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study,
			"-k", "NumberOfStudyRelatedInstances", "127.0.0.1", w.Port)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("findscu: %v\n%s", err, out)
		}
		m := studyCountRE.FindAllSubmatch(out, -1)
		if len(m) == 0 {
			return 0
		}
		n, _ := strconv.Atoi(string(m[0][1]))
		return n
	}
	// audited counts the Study Deleted records of study (the log is
	// appended in batches: a live Ward's may come a moment later).
	audited := func(study string, atLeast int) int {
		t.Helper()
		n := 0
		harness.PollAudit(dir, 10*time.Second, func(recs []audit.Record) bool {
			n = 0
			for _, r := range recs {
				if r.Event == "study-deleted" && strings.Contains(r.XML, study) && strings.Contains(r.XML, "crash test") {
					n++
				}
			}
			return n >= atLeast
		})
		return n
	}
	clean := func(round int) {
		t.Helper()
		out, err := exec.Command(bin, "study", "verify", "--json", "--data", dir).Output()
		var res struct {
			Report struct{ Instances, Problems, Unreferenced int64 }
		}
		if jerr := json.Unmarshal(out, &res); jerr != nil || err != nil || res.Report.Problems != 0 {
			t.Fatalf("round %d: the archive does not verify: %v %v\n%s", round, err, jerr, out)
		}
	}

	w := startWard(t, dir, freePort(t))
	// A study that stays, and one deleted without a kill, to time it.
	keep := store(w, 0)
	if n := instances(w, keep); n != perStudy {
		out, _ := dcmtk("findscu", "-S", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+keep,
			"-k", "NumberOfStudyRelatedInstances", "127.0.0.1", w.Port).CombinedOutput()
		t.Fatalf("the study stored: %d instances found, want %d\n%s", n, perStudy, out)
	}
	first := store(w, 1)
	began := time.Now()
	if out, err := ward("study", "delete", first, "--reason", "crash test", "--data", dir); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	span := time.Since(began) * 3 / 2
	t.Logf("a deletion of %d instances took %s", perStudy, time.Since(began).Round(time.Millisecond))
	if n := instances(w, first); n != 0 || audited(first, 1) != 1 {
		t.Fatalf("after an uninterrupted deletion: %d instances found, %d records", n, audited(first, 1))
	}
	for r := 2; r <= 7; r++ {
		study := store(w, r)
		cmd := exec.Command(bin, "study", "delete", study, "--reason", "crash test", "--data", dir)
		var cout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &cout, &cout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Int64N(int64(span)))
		time.Sleep(delay)
		w.Kill()
		derr := cmd.Wait()
		w = startWard(t, dir, freePort(t))
		n := instances(w, study)
		recs := audited(study, 1)
		t.Logf("round %d: killed %s after the deletion began (delete exit: %v): %d of %d instances found, %d Study Deleted records",
			r, delay.Round(time.Millisecond), derr, n, perStudy, recs)
		switch {
		case n == 0 && recs >= 1:
			// Made and audited (twice at worst, if the kill fell between
			// the record's fsync and forgetting the index's note).
		case n == perStudy && recs == 0:
			// Not made: made now.
			if out, err := ward("study", "delete", study, "--reason", "crash test", "--data", dir); err != nil {
				t.Fatalf("round %d: delete after the restart: %v\n%s", r, err, out)
			}
			if n := instances(w, study); n != 0 || audited(study, 1) != 1 {
				t.Fatalf("round %d: after the second deletion: %d instances found, %d records", r, n, audited(study, 1))
			}
		default:
			t.Fatalf("round %d: %d of %d instances found and %d Study Deleted records after the restart (delete said: %s)", r, n, perStudy, recs, cout.String())
		}
		if n := instances(w, keep); n != perStudy {
			t.Fatalf("round %d: the other study has %d instances, want %d", r, n, perStudy)
		}
		clean(r)
	}
}
