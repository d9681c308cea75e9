//go:build unix

package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ward-pacs/ward/store"
)

// TestFilesClosedToOthers: the database, its write-ahead log and
// shared-memory file, and a snapshot are 0600 under the usual umask 022
// (regression: index.db and index.db-wal were 0644, and another local
// user read a patient's name from the WAL), and a directory made for them
// is 0700.
func TestFilesClosedToOthers(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o022))
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "index.db")
	db := openTest(t, path)
	defer db.Close()
	in := &store.Instance{SOPInstanceUID: "1.2.3.4.1", SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SeriesInstanceUID: "1.2.3.4",
		StudyInstanceUID: "1.2.3", PatientID: "P1", PatientName: "DOE^JANE", BlobKey: "k1", ReceivedAt: time.Now()}
	if _, err := db.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	s, err := db.Snapshot(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(ctx, in.SOPInstanceUID); err != nil {
		t.Fatalf("the snapshot lacks the instance: %v", err)
	}
	want := map[string]os.FileMode{dir: 0o700, path: 0o600, path + "-wal": 0o600, path + "-shm": 0o600, snap: 0o600}
	for p, mode := range want {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
}
