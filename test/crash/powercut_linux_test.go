package crash

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/lazyfs"
	"github.com/ward-pacs/ward/internal/testci"
)

// powerFS is a lazyfs mount that the test can cut the power of.
type powerFS struct {
	t    *testing.T
	work string
	mnt  string
	fs   *lazyfs.FS
	live string
	gen  int
}

func mountPower(t *testing.T) *powerFS {
	t.Helper()
	testci.RequireRoot(t, "mounting lazyfs (FUSE)")
	p := &powerFS{t: t, work: t.TempDir()}
	p.mnt = filepath.Join(p.work, "mnt")
	if err := os.Mkdir(p.mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	p.live = p.next("live")
	if err := os.Mkdir(p.live, 0o700); err != nil {
		t.Fatal(err)
	}
	p.mount()
	// Registered before any ward starts, so run after each is killed.
	t.Cleanup(func() {
		if p.fs != nil {
			p.fs.Unmount()
		}
	})
	return p
}

func (p *powerFS) next(what string) string {
	p.gen++
	return filepath.Join(p.work, fmt.Sprint(what, p.gen))
}

func (p *powerFS) mount() {
	p.t.Helper()
	shadow := p.next("shadow")
	if err := os.Mkdir(shadow, 0o700); err != nil {
		p.t.Fatal(err)
	}
	fs, err := lazyfs.Mount(p.live, p.mnt, shadow)
	if err != nil {
		testci.SkipOrFail(p.t, "lazyfs: %v", err)
	}
	p.fs = fs
}

// cut loses everything not fsynced: the mount then shows what a restart
// after a power cut finds. Every process using the mount must be dead.
func (p *powerFS) cut() {
	p.t.Helper()
	after := p.next("live")
	if err := p.fs.Snapshot(after); err != nil {
		p.t.Fatal(err)
	}
	if err := p.fs.Unmount(); err != nil {
		p.t.Fatal(err)
	}
	p.fs = nil
	old := p.live
	p.live = after
	p.mount()
	os.RemoveAll(old)
}

// TestPowerCutMidIngest: nothing acknowledged is lost to a power cut.
// Unlike TestKillMidIngest, where the page cache outlives the killed
// process, Ward's data directory is on lazyfs, which keeps only what was
// fsynced (a file's bytes and extended attributes by its fsync, directory
// entries by the directory's). Rounds of storescu ingest into `ward serve`
// are each ended by SIGKILL at a random moment followed at once by a power
// cut; Ward restarts on what survived (recovery runs), is stopped cleanly,
// and the directory is checked as after a kill (see verify): every
// instance storescu saw "Received Store Response (Success)" for is indexed
// with a blob holding exactly the data set sent. Every third round the
// file system refuses extended attributes, so that Ward cannot write
// intent records and commits each index row durably before responding.
// It fails if the object's
// fsync in the blob store, or the fsync of the index commit, is left out.
func TestPowerCutMidIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: skipped under -short")
	}
	requireTool(t, "storescu")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x9a11))
	power := mountPower(t)
	dir := filepath.Join(power.mnt, "data")

	const perRound, resend = 100, 20
	rounds := []int{1, 4, 1, 4, 1, 4} // storescu processes per round
	acked := map[string]*instance{}
	byPath := map[string]*instance{}
	var prev []*instance
	start := time.Now()
	for r, parallel := range rounds {
		fresh := makeInstances(t, filepath.Join(power.work, fmt.Sprint("in", r)), fmt.Sprintf("1.2.826.0.1.3680043.10.543.%d.9%d", seed%1e6, r+1), perRound)
		batch := append(append([]*instance(nil), fresh...), prev[:min(resend, len(prev))]...)
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		for _, in := range batch {
			byPath[in.path] = in
		}
		prev = fresh

		// Every third round the file system keeps no extended attributes:
		// Ward then commits each index row durably before the response,
		// instead of writing an intent record into the object.
		power.fs.RefuseXattrs(r%3 == 2)
		w := startWard(t, dir, freePort(t))
		killAt := int64(1 + rng.IntN(len(batch)*3/4))
		jitter := time.Duration(rng.IntN(5000)) * time.Microsecond
		var acks, killedAt atomic.Int64
		killed := make(chan struct{})
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
		if r == 0 {
			// SQLite maps its -shm file shared: it must work on lazyfs.
			maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", w.Cmd.Process.Pid))
			if err != nil || !strings.Contains(string(maps), filepath.Join(dir, "index.db-shm")) {
				t.Errorf("ward serve has not mapped %s (%v)", filepath.Join(dir, "index.db-shm"), err)
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
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: only %d of %d acknowledgements in 60s", r, acks.Load(), killAt)
		}
		for _, s := range scus {
			s.wait(t, 10*time.Second)
			for _, p := range s.log.ackedFiles() {
				in := byPath[p]
				if in == nil {
					t.Fatalf("storescu acknowledged an unknown file %q", p)
				}
				acked[in.uid] = in
			}
		}
		power.cut()
		t.Logf("round %d: %d storescu, SIGKILL and power cut after %d+ of %d acknowledgements (+%s); %d acknowledged so far",
			r, parallel, killedAt.Load(), len(batch), jitter, len(acked))

		w = startWard(t, dir, freePort(t))
		if err, _ := w.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatalf("ward after the power cut: exit %v", err)
		}
		n := verify(t, dir, acked)
		if t.Failed() {
			t.Fatalf("round %d: acknowledged objects lost or damaged by the power cut", r)
		}
		t.Logf("round %d: after restart %d instances indexed, all %d acknowledged present", r, n, len(acked))
	}
	t.Logf("%d rounds in %s (%d file and %d directory fsyncs in the last mount)", len(rounds), time.Since(start).Round(time.Millisecond), power.fs.FileSyncs(), power.fs.DirSyncs())
}
