package crash

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillMidMigrate: `ward migrate` killed (SIGKILL) at random moments,
// then run again, finishes the migration: the destination, a data
// directory of its own (SQLite and files), holds every instance the
// source acknowledged, byte for byte, once, and nothing a killed run was
// writing (verify: no file in tmp/ or pending/, as many objects as
// instances); --verify-only then passes. A kill is also tried with
// SIGINT, which ends the run cleanly with "not finished".
func TestKillMidMigrate(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped under -short")
	}
	requireTool(t, "storescu")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x316))
	bin := wardBinary(t)
	work := t.TempDir()
	src := filepath.Join(work, "data")

	const n = 300
	w := startWard(t, src, freePort(t))
	ins := makeInstances(t, filepath.Join(work, "in"), fmt.Sprintf("1.2.826.0.1.3680043.10.543.%d.7", seed%1e6), n)
	acked := map[string]*instance{}
	var paths []string
	for _, in := range ins {
		paths = append(paths, in.path)
		acked[in.uid] = in
	}
	s := startStorescu(t, w.Port, paths, nil)
	s.wait(t, 120*time.Second)
	if s.err != nil {
		t.Fatalf("storescu: %v\n%s", s.err, s.log.String())
	}
	if err, _ := w.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("ward serve: %v", err)
	}

	conf := func(dir string) string {
		p := filepath.Join(work, filepath.Base(dir)+".toml")
		if err := os.WriteFile(p, []byte("data = \""+dir+"\"\n[storage]\nmin_free = \"16MiB\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	migrate := func(to string, extra ...string) *exec.Cmd {
		return exec.Command(bin, append([]string{"migrate", "--to", to, "--parallel", "2", "--data", src}, extra...)...)
	}
	// How long a whole migration takes here: the kills land within it.
	began := time.Now()
	if out, err := migrate(conf(filepath.Join(work, "timing"))).CombinedOutput(); err != nil {
		t.Fatalf("migration: %v\n%s", err, out)
	}
	span := time.Since(began)

	dst := filepath.Join(work, "new")
	to := conf(dst)
	for r := range 5 {
		cmd := migrate(to)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Int64N(int64(span)))
		time.Sleep(delay)
		sig := os.Signal(syscall.SIGKILL)
		if r == 2 {
			sig = os.Interrupt
		}
		_ = cmd.Process.Signal(sig)
		err := cmd.Wait()
		if sig == os.Interrupt && err != nil && !strings.Contains(out.String(), "not finished (run it again to resume)") {
			t.Fatalf("round %d: interrupted migration: %v\n%s", r, err, out.String())
		}
		t.Logf("round %d: %s after %s: %v", r, sig, delay.Round(time.Millisecond), err)
	}
	out, err := migrate(to).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("instances source %d, destination %d", n, n)) {
		t.Fatalf("the migration after the kills: %v\n%s", err, out)
	}
	t.Logf("last run:\n%s", out)
	if got := verify(t, dst, acked); got != n {
		t.Fatalf("the destination holds %d instances, want %d", got, n)
	}
	if out, err := migrate(to, "--verify-only").CombinedOutput(); err != nil || !strings.Contains(string(out), fmt.Sprintf("%d instances verified", n)) {
		t.Fatalf("verify-only: %v\n%s", err, out)
	}
}
