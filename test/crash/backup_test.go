package crash

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-pacs/ward/test/harness"
)

// TestKillMidBackup: a backup folder is whole whatever the moment a backup
// into it is stopped. Rounds of: objects stored with storescu, `ward
// backup` of the serving Ward started, and ward serve killed (SIGKILL) a
// random moment later (before the snapshot, while objects are copied, as
// the new index replaces the old, or after the end). The folder then
// verifies clean (`ward study verify`, which opens it as a data
// directory) with the instances of the previous backup or of the new one,
// nothing in between; after a restart, the backup runs to its end and the
// folder holds every instance of the archive, whatever the killed run
// left in it (the verification reads a copy, so that nothing clears the
// leftovers before that backup runs).
func TestKillMidBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped under -short")
	}
	requireTool(t, "storescu")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0xbac0))
	bin := wardBinary(t)
	work := t.TempDir()
	dir, bk := filepath.Join(work, "data"), filepath.Join(work, "backup")
	ward := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	// verified checks a copy of the folder (opening the folder itself as
	// a data directory would clear what a killed backup left there, which
	// the next backup must cope with) and returns how many instances it
	// holds.
	verified := func(round int) int64 {
		t.Helper()
		check := filepath.Join(work, fmt.Sprint("check", round, "-", time.Now().UnixNano()))
		if out, err := exec.Command("cp", "-a", bk, check).CombinedOutput(); err != nil {
			t.Fatalf("copying the backup folder: %v\n%s", err, out)
		}
		defer os.RemoveAll(check)
		out, err := exec.Command(bin, "study", "verify", "--json", "--data", check).Output()
		var res struct {
			Report struct{ Instances, Problems int64 }
		}
		if jerr := json.Unmarshal(out, &res); jerr != nil || err != nil || res.Report.Problems != 0 {
			t.Fatalf("round %d: the backup folder does not verify: %v %v\n%s", round, err, jerr, out)
		}
		return res.Report.Instances
	}
	store := func(w *harness.Proc, round, n int) {
		t.Helper()
		var paths []string
		for _, in := range makeInstances(t, filepath.Join(work, fmt.Sprint("in", round)), fmt.Sprintf("1.2.826.0.1.3680043.10.543.%d.9%d", seed%1e6, round), n) {
			paths = append(paths, in.path)
		}
		s := startStorescu(t, w.Port, paths, nil)
		s.wait(t, 60*time.Second)
		if s.err != nil {
			t.Fatalf("round %d: storescu: %v\n%s", round, s.err, s.log.String())
		}
	}

	const perRound = 150
	w := startWard(t, dir, freePort(t))
	store(w, 0, perRound)
	began := time.Now()
	if out, err := ward("backup", bk, "--data", dir); err != nil {
		t.Fatalf("first backup: %v\n%s", err, out)
	}
	// The kill lands anywhere in a backup of as many new objects.
	span := time.Since(began) * 5 / 4
	backedUp := int64(perRound)
	for r := 1; r <= 6; r++ {
		store(w, r, perRound)
		total := int64(perRound * (r + 1))
		cmd := exec.Command(bin, "backup", bk, "--data", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Int64N(int64(span)))
		time.Sleep(delay)
		w.Kill()
		berr := cmd.Wait()
		copies := len(files(t, filepath.Join(bk, "pending")))
		unfinished := len(files(t, filepath.Join(bk, "tmp")))
		n := verified(r)
		if n != backedUp && n != total {
			t.Fatalf("round %d: the folder holds %d instances after the kill, neither the previous backup's %d nor the new one's %d", r, n, backedUp, total)
		}
		t.Logf("round %d: killed %s after the backup began (backup exit: %v, %d copies pending, %d unfinished): the folder holds %d of %d instances",
			r, delay.Round(time.Millisecond), berr, copies, unfinished, n, total)
		w = startWard(t, dir, freePort(t))
		if out, err := ward("backup", bk, "--data", dir); err != nil {
			t.Fatalf("round %d: backup after restart: %v\n%s", r, err, out)
		}
		if n := verified(r); n != total {
			t.Fatalf("round %d: the finished backup holds %d instances, the archive %d", r, n, total)
		}
		backedUp = total
	}
}
