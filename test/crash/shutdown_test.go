package crash

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/server"
)

// TestSignalShutdown: SIGTERM and SIGINT during an ingest by two storescu
// stop `ward serve` cleanly: it stops accepting, lets the associations in
// flight finish (within server.ShutdownGrace), exits 0, and leaves nothing
// half-committed: after a restart every acknowledged instance is there,
// tmp/ and pending/ are empty and objects/ holds exactly the indexed blobs.
func TestSignalShutdown(t *testing.T) {
	requireTool(t, "storescu")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			work := t.TempDir()
			dir := filepath.Join(work, "data")
			batch := makeInstances(t, filepath.Join(work, "in"), fmt.Sprintf("1.2.826.0.1.3680043.10.543.9%d.%d", sig, time.Now().UnixNano()%1e9), 200)
			byPath := map[string]*instance{}
			for _, in := range batch {
				byPath[in.path] = in
			}
			w := startWard(t, dir, freePort(t))
			var acks atomic.Int64
			signalled := make(chan struct{})
			onAck := func() {
				if acks.Add(1) == 25 {
					close(signalled)
				}
			}
			var scus []*storescu
			for p := range 2 {
				var paths []string
				for i := p; i < len(batch); i += 2 {
					paths = append(paths, batch[i].path)
				}
				scus = append(scus, startStorescu(t, w.Port, paths, onAck))
			}
			select {
			case <-signalled:
			case <-time.After(30 * time.Second):
				t.Fatal("no acknowledgements in 30s")
			}
			exitErr, took := w.Stop(t, sig, server.ShutdownGrace+5*time.Second)
			if exitErr != nil {
				t.Errorf("ward exit after %s: %v, want status 0", sig, exitErr)
			}
			if took > server.ShutdownGrace+time.Second {
				t.Errorf("ward took %s to exit after %s; grace is %s", took, sig, server.ShutdownGrace)
			}
			acked := map[string]*instance{}
			for _, s := range scus {
				s.wait(t, 10*time.Second)
				for _, p := range s.log.ackedFiles() {
					acked[byPath[p].uid] = byPath[p]
				}
			}
			t.Logf("%s after 25 acknowledgements: ward exited in %s; %d of %d acknowledged", sig, took.Round(time.Millisecond), len(acked), len(batch))
			// Nothing half-committed right after the exit, before any
			// recovery.
			checkNoLeftovers(t, dir)
			if _, err := os.Stat(filepath.Join(dir, "index.db")); err != nil {
				t.Fatal(err)
			}
			// Restart, stop, check.
			w = startWard(t, dir, freePort(t))
			if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
				t.Fatalf("ward after restart: exit %v", err)
			}
			n := verify(t, dir, acked)
			if n != int64(len(acked)) {
				t.Errorf("%d instances indexed, %d acknowledged: a clean stop leaves none unacknowledged", n, len(acked))
			}
		})
	}
}
