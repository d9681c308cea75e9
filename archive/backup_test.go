package archive_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
)

// TestBackupHoldsDeletes: while a backup holds deletions, a deleted
// study's and a replaced instance's objects stay (the snapshot taken
// before may name them) and are copied; when it ends they go. A second
// backup into the same store copies only what is new and removes what
// the archive no longer has.
func TestBackupHoldsDeletes(t *testing.T) {
	ctx := context.Background()
	f := qrFixture(t)
	f.ar.Close() // publish what qrFixture stored

	release, err := f.ar.HoldDeletes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := f.idx.Snapshot(ctx, filepath.Join(t.TempDir(), "snap.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	b, err := f.idx.Get(ctx, studyB+".1.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ar.DeleteStudy(ctx, studyB, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	if rc, err := f.blobs.Open(ctx, b.BlobKey); err != nil {
		t.Fatalf("a deleted study's object went while a backup held deletions: %v", err)
	} else {
		rc.Close()
	}
	dst, err := fsblob.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var rep archive.BackupReport
	problem := func(p archive.VerifyProblem) { t.Errorf("problem: %+v", p) }
	if err := f.ar.CopyObjects(ctx, snap, dst, &rep, archive.CopyOptions{Problem: problem}); err != nil {
		t.Fatal(err)
	}
	if rep.Instances != int64(len(qrObjects)) || rep.Copied != rep.Instances || rep.Bytes == 0 {
		t.Fatalf("first backup: %+v", rep)
	}
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.blobs.Open(ctx, b.BlobKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the deleted study's object stayed after the backup: %v", err)
	}

	// The next backup: nothing new to copy, the deleted study's object
	// removed from the backup.
	snap2, err := f.idx.Snapshot(ctx, filepath.Join(t.TempDir(), "snap2.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap2.Close()
	rep = archive.BackupReport{}
	if err := f.ar.CopyObjects(ctx, snap2, dst, &rep, archive.CopyOptions{Problem: problem}); err != nil {
		t.Fatal(err)
	}
	if err := archive.SettleObjects(ctx, snap2, dst, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Instances != int64(len(qrObjects))-1 || rep.Copied != 0 || rep.Removed != 1 {
		t.Fatalf("second backup: %+v", rep)
	}
	if _, err := dst.Open(ctx, b.BlobKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the deleted study's object is still in the backup: %v", err)
	}
}

// TestBackupWhileStoring: objects stored, replaced and deleted while a
// backup runs do not make it incomplete: every instance of the snapshot
// is copied, checked against its checksum.
func TestBackupWhileStoring(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, archive.DuplicateReplace)
	obj := func(i int, name string) *object {
		return qrObject{"P9", name, studyC, studyC + ".9", fmt.Sprintf("%s.9.%d", studyC, i), "CT", "20210101"}.object(t)
	}
	for i := range 40 {
		o := obj(i, "Before^Backup")
		if err := f.store(o, o.bytes(t)); err != nil {
			t.Fatal(err)
		}
	}
	release, err := f.ar.HoldDeletes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := f.idx.Snapshot(ctx, filepath.Join(t.TempDir(), "snap.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	done := make(chan error, 1)
	go func() {
		// Replace half, store new ones, delete some.
		for i := range 40 {
			o := obj(i*2, "During^Backup")
			if err := f.store(o, o.bytes(t)); err != nil {
				done <- err
				return
			}
			if i%10 == 0 {
				if err := f.idx.Delete(ctx, fmt.Sprintf("%s.9.%d", studyC, i*2+1)); err != nil && !errors.Is(err, store.ErrNotFound) {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	dst, err := fsblob.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var rep archive.BackupReport
	if err := f.ar.CopyObjects(ctx, snap, dst, &rep, archive.CopyOptions{Problem: func(p archive.VerifyProblem) { t.Errorf("problem: %+v", p) }}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}
	if rep.Instances != 40 || rep.Copied != 40 {
		t.Fatalf("backup: %+v", rep)
	}
}

// TestBackupDamagedObject: an object whose bytes no longer match its
// recorded checksum is copied as found and reported; a missing one is
// reported and not copied.
func TestBackupDamagedObject(t *testing.T) {
	ctx := context.Background()
	f := qrFixture(t)
	f.ar.Close()
	flipBit(t, f.blobFile(t, studyA+".1.1"), 1)
	if err := os.Remove(f.blobFile(t, studyB+".1.1")); err != nil {
		t.Fatal(err)
	}
	snap, err := f.idx.Snapshot(ctx, filepath.Join(t.TempDir(), "snap.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	dst, err := fsblob.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var rep archive.BackupReport
	problems := map[string]string{}
	var copied int
	err = f.ar.CopyObjects(ctx, snap, dst, &rep, archive.CopyOptions{
		Problem: func(p archive.VerifyProblem) { problems[p.SOPInstanceUID] = p.Problem },
		Copied:  func(*store.Instance) { copied++ }})
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(qrObjects))
	if rep.Instances != n || rep.Copied != n-1 || int64(copied) != n-1 || rep.Problems != 2 ||
		!strings.Contains(problems[studyA+".1.1"], "checksum") || !strings.Contains(problems[studyB+".1.1"], "missing") {
		t.Fatalf("%+v %v (%d copied)", rep, problems, copied)
	}
}

// TestBackupRate: a rate cap spreads the copying out, with progress
// reported meanwhile.
func TestBackupRate(t *testing.T) {
	ctx := context.Background()
	f := qrFixture(t)
	f.ar.Close()
	snap, err := f.idx.Snapshot(ctx, filepath.Join(t.TempDir(), "snap.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	full, _ := verifyAll(t, f)
	dst, err := fsblob.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var rep archive.BackupReport
	var progress []archive.BackupReport
	start := time.Now()
	err = f.ar.CopyObjects(ctx, snap, dst, &rep, archive.CopyOptions{MaxRate: full.Bytes, ProgressEvery: 100 * time.Millisecond,
		Progress: func(r archive.BackupReport) { progress = append(progress, r) }})
	if err != nil || rep.Copied != full.Instances {
		t.Fatalf("%+v %v", rep, err)
	}
	// Bytes that take a second at the cap take at least half of one (the
	// last object's copy is not waited for).
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("%d bytes at %d bytes/s took %v", rep.Bytes, full.Bytes, d)
	}
	if len(progress) == 0 || progress[len(progress)-1].Copied >= rep.Copied {
		t.Errorf("progress %+v of %+v", progress, rep)
	}
}

// TestHoldDeletesAcrossNodes: a hold on deletions is recorded in the
// index, so another node sharing it keeps the objects too, and a node's
// restart drops the holds it left (killed during a backup) but not
// another node's.
func TestHoldDeletesAcrossNodes(t *testing.T) {
	ctx := context.Background()
	f := qrFixture(t)
	f.ar.Close()

	a := &archive.Archive{Index: f.idx, Blobs: f.blobs, Node: "node-a"}
	if err := a.Open(ctx); err != nil {
		t.Fatal(err)
	}
	release, err := a.HoldDeletes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Node b opens the same store while a holds: it starts, and keeps
	// what it deletes.
	b := &archive.Archive{Index: f.idx, Blobs: f.blobs, Node: "node-b"}
	if err := b.Open(ctx); err != nil {
		t.Fatalf("opening a second node while the first holds deletions: %v", err)
	}
	defer b.Close()
	in, err := f.idx.Get(ctx, studyB+".1.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteStudy(ctx, studyB, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	if rc, err := f.blobs.Open(ctx, in.BlobKey); err != nil {
		t.Fatalf("node b deleted an object while node a held deletions: %v", err)
	} else {
		rc.Close()
	}
	// a is killed holding; its restart drops its own hold.
	a.Close()
	a = &archive.Archive{Index: f.idx, Blobs: f.blobs, Node: "node-a"}
	if err := a.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if held, err := f.idx.DeletesHeld(ctx); err != nil || held {
		t.Fatalf("DeletesHeld = %v, %v after the holding node restarted", held, err)
	}
	if _, err := f.blobs.Open(ctx, in.BlobKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the deleted study's object stayed after the hold was gone: %v", err)
	}
	if err := release(ctx); err != nil {
		t.Fatalf("releasing a hold already dropped: %v", err)
	}
	// A hold of another node stays over a restart.
	if _, err := f.idx.HoldDeletes(ctx, "node-c", time.Hour); err != nil {
		t.Fatal(err)
	}
	c := &archive.Archive{Index: f.idx, Blobs: f.blobs, Node: "node-b"}
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if held, err := f.idx.DeletesHeld(ctx); err != nil || !held {
		t.Fatalf("DeletesHeld = %v, %v: another node's restart dropped node c's hold", held, err)
	}
}

// TestRecordedDeletionsByNode: at start a node finishes (audits) the
// study deletions it left, not those another node is recording now; a
// deletion another node left and did not come back for is finished by
// whichever node starts once it is older than DeletionGuard.
func TestRecordedDeletionsByNode(t *testing.T) {
	ctx := context.Background()
	f := qrFixture(t)
	a := &archive.Archive{Index: f.idx, Blobs: f.blobs, Node: "node-a"}
	b := &archive.Archive{Index: f.idx, Blobs: f.blobs, Node: "node-b"}
	if _, err := a.DeleteStudy(ctx, studyB, "test", "tester"); err != nil {
		t.Fatal(err)
	}
	old, err := json.Marshal(archive.Deletion{Study: archive.StudySummary{UID: "1.2.3"}, Reason: "old", At: time.Now().Add(-2 * archive.DeletionGuard), Node: "node-c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.idx.DeleteRecorded(ctx, nil, old); err != nil {
		t.Fatal(err)
	}
	reasons := func(ar *archive.Archive) []string {
		ds, err := ar.RecordedDeletions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.Node+":"+d.Reason)
		}
		return out
	}
	if got := strings.Join(reasons(a), ","); got != "node-a:test,node-c:old" {
		t.Errorf("node a finishes %s", got)
	}
	if got := strings.Join(reasons(b), ","); got != "node-c:old" {
		t.Errorf("node b finishes %s", got)
	}
}
