package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
)

// abortingStorer aborts the association instead of answering the C-STOREs
// abort says it should (by SOP Instance UID and attempt, from 1), and
// stores the others in ar. It counts associations and attempts.
type abortingStorer struct {
	ar    *dimsetest.Archive
	abort func(uid string, attempt int) bool
	mu    sync.Mutex
	tries map[string]int
}

func (s *abortingStorer) Store(ctx context.Context, r *dimse.StoreRequest) error {
	s.mu.Lock()
	s.tries[r.SOPInstanceUID]++
	n := s.tries[r.SOPInstanceUID]
	s.mu.Unlock()
	if s.abort(r.SOPInstanceUID, n) {
		r.Assoc.Abort()
		return fmt.Errorf("aborted by the test")
	}
	return s.ar.Store(ctx, r)
}

func storeFixture(t *testing.T, n int, abort func(uid string, attempt int) bool) (addr, dir string, s *abortingStorer) {
	t.Helper()
	s = &abortingStorer{ar: &dimsetest.Archive{}, abort: abort, tries: map[string]int{}}
	srv, err := dimsetest.Start(s.ar, dimsetest.Options{Dispatcher: func(d *dimse.Dispatcher) { d.Handlers.Store = s }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir = t.TempDir()
	for i := 1; i <= n; i++ {
		o := dimsetest.NewObject(map[string]string{"SOPInstanceUID": fmt.Sprintf("1.2.826.0.1.3680043.10.17.%d", i), "PatientID": "P1"}, dicom.ExplicitVRLittleEndian, "")
		if err := o.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d.dcm", i))); err != nil {
			t.Fatal(err)
		}
	}
	return srv.Addr, dir, s
}

// TestStoreResumesAfterAbort: the peer aborts once, during the 2nd of 13
// files. ward store opens a new association, sends that file again and
// the 11 after it: all 13 are stored and the exit status is 0 (issue 14,
// item 17: before, the 12 files left were "not sent").
func TestStoreResumesAfterAbort(t *testing.T) {
	const second = "1.2.826.0.1.3680043.10.17.2"
	addr, dir, s := storeFixture(t, 13, func(uid string, attempt int) bool { return uid == second && attempt == 1 })
	out, _, code := runCLI(t, "store", "--quiet", "--aec", "WARD", addr, dir)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if got := len(s.ar.Objects()); got != 13 {
		t.Fatalf("%d objects stored, want 13:\n%s", got, out)
	}
	if s.tries[second] != 2 {
		t.Errorf("the file in flight was sent %d times, want 2", s.tries[second])
	}
	if !strings.Contains(out, "sent 13 of 13") {
		t.Errorf("summary: %s", out)
	}
}

// TestStoreRetriesOnce: a peer that aborts every association on its first
// C-STORE (as storescp --abort-after does) gets each file twice, never
// more; each file fails with its own reason, and the exit status is 1.
func TestStoreRetriesOnce(t *testing.T) {
	addr, dir, s := storeFixture(t, 4, func(string, int) bool { return true })
	out, _, code := runCLI(t, "store", "--quiet", "--aec", "WARD", addr, dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for uid, n := range s.tries {
		if n != 2 {
			t.Errorf("%s sent %d times, want 2", uid, n)
		}
	}
	if len(s.tries) != 4 {
		t.Errorf("%d files reached the peer, want 4", len(s.tries))
	}
	if !strings.Contains(out, "sent 0 of 4") || !strings.Contains(out, "failed (4)") || !strings.Contains(out, "ended twice") {
		t.Errorf("summary:\n%s", out)
	}
}
