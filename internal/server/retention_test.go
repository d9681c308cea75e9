package server

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

// TestRetentionPassOneAtATime: a retention pass runs only while no other
// runs: on SQLite (one node) this process's own; on PostgreSQL any node's
// sharing the index (an advisory lock held by another node's connection
// keeps this node's pass from running, scheduled or by hand). Once free,
// the scheduled pass deletes the studies due, and only those; and
// ward patient delete's erasure works on either index, by issuer.
func TestRetentionPassOneAtATime(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			data := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(data, 0o700); err != nil {
				t.Fatal(err)
			}
			c := config.Default()
			c.DataDir = data
			c.Retention = config.Retention{Interval: "1h", MaxPercent: 100,
				Rules: []config.RetentionRule{{Name: "old", OlderThan: "10y"}}}
			if backend == "postgres" {
				if why := harness.PostgresMissing(); why != "" {
					testci.SkipOrFail(t, "%s", why)
				}
				c.Storage.Index, c.Storage.IndexDSN = "postgres", harness.StartPostgres(t).NewDatabase(t)
			}
			open := func(node string) (*store.Store, *Server) {
				st, err := store.Open(ctx, storeSpec(c, node))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				ar := &archive.Archive{Index: st.Index, Blobs: st.Blobs, Caps: &st.Caps, Node: node, Logger: slog.New(slog.DiscardHandler)}
				return st, &Server{Config: c, Logger: ar.Logger, archive: ar, node: node}
			}
			st1, s1 := open("n1")
			for i := range 3 {
				in := storetest.Sample(i, i, i)
				if i < 2 {
					in.StudyDate = "20000101"
				}
				if _, err := st1.Index.Put(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			// Another pass holds the lock: this node's own, or (PostgreSQL)
			// another node's.
			var release func()
			if backend == "postgres" {
				st2, _ := open("n2")
				rel, ok, err := st2.Caps.Exclusive.TryExclusive(ctx, retentionLock)
				if err != nil || !ok {
					t.Fatalf("the other node's lock: %v %v", ok, err)
				}
				release = rel
			} else {
				s1.retentionMu.Lock()
				release = s1.retentionMu.Unlock
			}
			if _, err := s1.retentionPass(ctx, "tester", true, true, 0); !errors.Is(err, errPassRunning) {
				t.Fatalf("a pass while another runs: %v", err)
			}
			s1.scheduledPass(ctx)
			if n, _ := st1.Index.CountInstances(ctx); n != 3 {
				t.Fatalf("%d instances left after a pass that should not have run", n)
			}
			// Planning needs no lock.
			if res, err := s1.retentionPass(ctx, "tester", false, false, 0); err != nil || res.Candidates != 2 {
				t.Fatalf("plan while a pass runs: %+v %v", res, err)
			}
			release()
			s1.scheduledPass(ctx)
			if n, _ := st1.Index.CountInstances(ctx); n != 1 {
				t.Fatalf("%d instances left after the scheduled pass, want 1", n)
			}
			if _, err := st1.Index.Get(ctx, storetest.Sample(2, 2, 2).SOPInstanceUID); err != nil {
				t.Fatalf("the study not due is gone: %v", err)
			}
			// The erasure of the last patient, on either index (the
			// issuer as stored, then another that matches nothing).
			issuer, other := "HOSP", "OTHER"
			res, err := admin.RunPatient(ctx, s1.archive, s1.trail(), s1.wardNode(), "tester", &admin.StudyRequest{Op: "patient-delete", Patient: "PID2", Issuer: &other, Reason: "test"})
			if err != nil || len(res.Studies) != 0 {
				t.Fatalf("erasure under another issuer: %+v %v", res, err)
			}
			res, err = admin.RunPatient(ctx, s1.archive, s1.trail(), s1.wardNode(), "tester", &admin.StudyRequest{Op: "patient-delete", Patient: "PID2", Issuer: &issuer, Reason: "test"})
			if err != nil || len(res.Deleted) != 1 || res.Deleted[0].Instances != 1 || res.Deleted[0].Error != "" || res.ScrubError != "" {
				t.Fatalf("erasure: %+v %v", res, err)
			}
			if n, _ := st1.Index.CountInstances(ctx); n != 0 {
				t.Fatalf("%d instances left after the erasure", n)
			}
		})
	}
}
