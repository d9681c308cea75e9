package audit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/internal/lazyfs"
	"github.com/ward-pacs/ward/internal/testci"
)

// TestSyncedRecordsSurvivePowerCut: once Sync returns, the records are in
// the log after a power cut, in a log directory Open just created. The log
// runs on lazyfs, which loses everything not fsynced, directory entries
// included.
func TestSyncedRecordsSurvivePowerCut(t *testing.T) {
	testci.RequireRoot(t, "mounting lazyfs (FUSE)")
	lfs, err := lazyfs.MountTemp(t.TempDir())
	if err != nil {
		testci.SkipOrFail(t, "lazyfs: %v", err)
	}
	defer lfs.Unmount()
	l, err := Open(filepath.Join(lfs.Dir(), "data", "audit"), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 5)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	after := filepath.Join(t.TempDir(), "after")
	if err := lfs.Snapshot(after); err != nil {
		t.Fatal(err)
	}
	l.Close()
	f, err := os.Open(filepath.Join(after, "data", "audit", FileName))
	if err != nil {
		t.Fatalf("audit log after the power cut: %v", err)
	}
	defer f.Close()
	if n, err := Verify(f); n != 5 || err != nil {
		t.Errorf("after the power cut: %d records (%v), want the 5 synced", n, err)
	}
}
