package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// dyingBlobs ends the calling goroutine (as a crash ends the process:
// nothing after runs) at its Delete number dieAt.
type dyingBlobs struct {
	store.Blobs
	deletes atomic.Int32
	dieAt   int32
}

func (b *dyingBlobs) Delete(ctx context.Context, key string) error {
	if b.deletes.Add(1) == b.dieAt {
		runtime.Goexit()
	}
	return b.Blobs.Delete(ctx, key)
}

// crashIn runs fn in a goroutine of its own and waits for it to return or
// die.
func crashIn(fn func()) {
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	<-done
}

// TestDeletionCutShort: a study deletion cut short by a crash is finished
// at the next start and audited then, once. Regression: a crash while
// ward study delete ran left 2 instances of 10 deleted, 8 in place, and
// no Study Deleted record. Here the deletion dies while it removes the
// objects (after the index committed), or before its audit record; the
// data directory is then opened again (as by ward serve or an admin
// command): the study is wholly gone, index and objects, the other study
// whole, and the audit trail has one Study Deleted record with the
// reason and the operator.
func TestDeletionCutShort(t *testing.T) {
	for _, c := range []struct {
		name string
		die  func(a *admin.Admin) admin.Trail
	}{
		{"while removing objects", func(a *admin.Admin) admin.Trail {
			a.Archive.Blobs = &dyingBlobs{Blobs: a.Archive.Blobs, dieAt: 3}
			return a.Trail(func(err error) { t.Error(err) })
		}},
		{"before the audit record", func(a *admin.Admin) admin.Trail {
			return admin.Trail{Record: func(*audit.Message) { runtime.Goexit() }}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := config.Default()
			cfg.DataDir = filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(cfg.DataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			a, err := OpenAdmin(ctx, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			var doomed, kept []*store.Instance
			for i := range 12 {
				in := storetest.Sample(i, i/10, i/5) // study 0: 10 instances, 2 series; study 1: 2
				bw, err := a.Archive.Blobs.Create(ctx, in.BlobKey)
				if err != nil {
					t.Fatal(err)
				}
				bw.Write([]byte("object " + in.SOPInstanceUID))
				if err := bw.Commit(); err != nil {
					t.Fatal(err)
				}
				if _, err := a.Archive.Index.Put(ctx, in); err != nil {
					t.Fatal(err)
				}
				if err := a.Archive.Blobs.Publish(ctx, in.BlobKey); err != nil {
					t.Fatal(err)
				}
				if i < 10 {
					doomed = append(doomed, in)
				} else {
					kept = append(kept, in)
				}
			}
			study := doomed[0].StudyInstanceUID
			tr := c.die(a)
			crashIn(func() {
				admin.RunStudyOp(ctx, a.Archive, tr, a.Node(), "admin@host", &admin.StudyRequest{Op: "delete", Studies: []string{study}, Reason: "wrong patient"})
				t.Error("the deletion did not die")
			})
			// The crash: nothing more is written; the stores and the log are
			// closed as the process's end would close them.
			if d, ok := a.Archive.Blobs.(*dyingBlobs); ok {
				a.Archive.Blobs = d.Blobs
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}

			a, err = OpenAdmin(ctx, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range doomed {
				if _, err := a.Archive.Index.Get(ctx, in.SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("instance %s of the deleted study: %v", in.SOPInstanceUID, err)
				}
				if rc, err := a.Archive.Blobs.Open(ctx, in.BlobKey); err == nil {
					rc.Close()
					t.Errorf("object of %s of the deleted study is still there", in.SOPInstanceUID)
				}
			}
			for _, in := range kept {
				if _, err := a.Archive.Index.Get(ctx, in.SOPInstanceUID); err != nil {
					t.Errorf("instance %s of the other study: %v", in.SOPInstanceUID, err)
				}
			}
			if ds, err := a.Archive.RecordedDeletions(ctx); err != nil || len(ds) != 0 {
				t.Errorf("deletions still noted after they were audited: %v %v", ds, err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			// Opened a third time: nothing more is recorded.
			a, err = OpenAdmin(ctx, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
			b, err := os.ReadFile(filepath.Join(cfg.AuditDir(), audit.FileName))
			if err != nil {
				t.Fatal(err)
			}
			var deleted []audit.Record
			_ = audit.Each(bytes.NewReader(b), func(r *audit.Record) error {
				if r.Event == "study-deleted" {
					deleted = append(deleted, *r)
				}
				return nil
			})
			if len(deleted) != 1 {
				t.Fatalf("%d Study Deleted records, want 1", len(deleted))
			}
			r := deleted[0]
			for _, want := range []string{study, "wrong patient", "admin@host", doomed[0].PatientID} {
				if !strings.Contains(r.XML, want) {
					t.Errorf("the Study Deleted record lacks %q:\n%s", want, r.XML)
				}
			}
			if r.Outcome != audit.OutcomeSuccess {
				t.Errorf("outcome %d", r.Outcome)
			}
		})
	}
}
