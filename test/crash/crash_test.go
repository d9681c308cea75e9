package crash

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestKillMidIngest: nothing acknowledged is lost. Rounds of storescu
// ingest into `ward serve`, each ended by SIGKILL of the server at a
// random moment (after a random number of success responses, plus a random
// delay of up to 5 ms so that the kill lands anywhere in the store path:
// writing, fsync, rename, index commit, publish, response). Half the
// rounds run four storescu in parallel. Each round also re-sends instances
// of the previous round, so kills land in replacements too. After each
// kill Ward is restarted on the same data directory (recovery runs),
// stopped cleanly, and the directory is checked (see verify): every
// instance storescu saw "Received Store Response (Success)" for is indexed
// with a readable blob holding exactly the data set sent, tmp/ and pending/
// are empty and objects/ holds exactly the indexed blobs.
func TestKillMidIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped under -short")
	}
	requireTool(t, "storescu")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x77a4d))

	const perRound, resend = 150, 30
	rounds := []int{1, 4, 1, 4, 1, 4, 1, 4, 1, 4} // storescu processes per round
	work := t.TempDir()
	dir := filepath.Join(work, "data")
	acked := map[string]*instance{}
	byPath := map[string]*instance{}
	var prev []*instance
	start := time.Now()
	for r, parallel := range rounds {
		fresh := makeInstances(t, filepath.Join(work, fmt.Sprint("in", r)), fmt.Sprintf("1.2.826.0.1.3680043.10.543.%d.%d", seed%1e6, r+1), perRound)
		batch := append(append([]*instance(nil), fresh...), prev[:min(resend, len(prev))]...)
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		for _, in := range batch {
			byPath[in.path] = in
		}
		prev = fresh

		port := freePort(t)
		w := startWard(t, dir, port)
		killAt := int64(1 + rng.IntN(len(batch)*3/4))
		jitter := time.Duration(rng.IntN(5000)) * time.Microsecond
		var acks atomic.Int64
		killed := make(chan struct{})
		var killedAt atomic.Int64
		onAck := func() {
			if acks.Add(1) == killAt {
				go func() {
					time.Sleep(jitter)
					killedAt.Store(acks.Load())
					w.Kill()
					close(killed)
				}()
			}
		}
		var scus []*storescu
		for p := range parallel {
			var paths []string
			for i := p; i < len(batch); i += parallel {
				paths = append(paths, batch[i].path)
			}
			scus = append(scus, startStorescu(t, w.Port, paths, onAck))
		}
		select {
		case <-killed:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: only %d of %d acknowledgements in 30s", r, acks.Load(), killAt)
		}
		failed := 0
		for _, s := range scus {
			s.wait(t, 10*time.Second)
			if s.err != nil {
				failed++
			}
			for _, p := range s.log.ackedFiles() {
				in := byPath[p]
				if in == nil {
					t.Fatalf("storescu acknowledged an unknown file %q", p)
				}
				acked[in.uid] = in
			}
		}
		if failed == 0 {
			t.Errorf("round %d: every storescu finished cleanly: the kill was not mid-ingest", r)
		}
		t.Logf("round %d: %d storescu, SIGKILL after %d+ of %d acknowledgements (+%s); %d acknowledged so far",
			r, parallel, killedAt.Load(), len(batch), jitter, len(acked))

		// Restart on the same directory: recovery runs at start. Then stop
		// cleanly and look at what is on disk.
		w = startWard(t, dir, freePort(t))
		if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatalf("ward after recovery: exit %v", err)
		}
		n := verify(t, dir, acked)
		if t.Failed() {
			t.Fatalf("round %d: inconsistent after crash and restart", r)
		}
		t.Logf("round %d: after restart %d instances indexed, all %d acknowledged present", r, n, len(acked))
	}
	t.Logf("%d rounds in %s", len(rounds), time.Since(start).Round(time.Millisecond))
}
