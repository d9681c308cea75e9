package harness

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
)

// AuditRecords returns the records of the audit log of the data directory
// dir as it is now (none if it cannot be read yet).
func AuditRecords(dir string) []audit.Record {
	var recs []audit.Record
	if b, err := os.ReadFile(filepath.Join(dir, "audit", audit.FileName)); err == nil {
		_ = audit.Each(bytes.NewReader(b), func(r *audit.Record) error { recs = append(recs, *r); return nil })
	}
	return recs
}

// PollAudit rereads the audit log of dir until want says the records are
// all there, or limit passes (the log is appended in batches, so a running
// Ward's records may come a moment later). It returns the last records
// read and whether want was satisfied.
func PollAudit(dir string, limit time.Duration, want func([]audit.Record) bool) ([]audit.Record, bool) {
	deadline := time.Now().Add(limit)
	for {
		recs := AuditRecords(dir)
		if want(recs) {
			return recs, true
		}
		if time.Now().After(deadline) {
			return recs, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ReadAudit is PollAudit for up to 10 s that fails the test, listing the
// records it found, when want is never satisfied.
func ReadAudit(t testing.TB, dir string, want func([]audit.Record) bool) []audit.Record {
	t.Helper()
	recs, ok := PollAudit(dir, 10*time.Second, want)
	if !ok {
		for _, r := range recs {
			t.Logf("%d %s %v %v", r.Seq, r.Event, r.Peers, r.Patients)
		}
		t.Fatal("audit records missing")
	}
	return recs
}
