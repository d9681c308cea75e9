package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

// TestAuditVerifyCheckpointsOfOtherNodes: a collector shared by the nodes
// of a cluster holds every node's checkpoints; ward audit verify
// --checkpoints checks this node's log against its own (and those naming
// no node) and leaves the others aside, instead of failing on them.
func TestAuditVerifyCheckpointsOfOtherNodes(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "node-id"), []byte("node-a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(filepath.Join(data, "audit"), nil, audit.WithKeyFile(filepath.Join(data, audit.KeyFileName)), audit.WithSource(audit.Node{AETitle: "WARD", ID: "node-a"}))
	if err != nil {
		t.Fatal(err)
	}
	n := audit.Node{AETitle: "WARD", ID: "node-a"}
	for range 3 {
		if err := l.Write(audit.ApplicationActivity(n, true, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	recs := harness.AuditRecords(data)
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	// Record 2's prev is record 1's hash: a true checkpoint of seq 1.
	mine := "<133>1 2026-01-01T00:00:00Z pacs ward 1 WARD-CHECKPOINT - audit chain head seq=1 hash=" + recs[1].Prev + " node=node-a\n"
	other := "<133>1 2026-01-01T00:00:00Z pacs ward 2 WARD-CHECKPOINT - audit chain head seq=2 hash=" + strings.Repeat("ab", 32) + " node=node-b\n"
	cp := filepath.Join(t.TempDir(), "collector.log")
	if err := os.WriteFile(cp, []byte(mine+other), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := runCLI(t, "audit", "verify", "--data", data, "--checkpoints", cp)
	if code != 0 || !strings.Contains(out, "1 checkpoints of other nodes left aside") || !strings.Contains(out, "1 of 1 checkpoints found") {
		t.Fatalf("verify: %d %s %s", code, out, errs)
	}
	// The other node's checkpoint, named as none, is a break.
	if err := os.WriteFile(cp, []byte(mine+strings.Replace(other, " node=node-b", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runCLI(t, "audit", "verify", "--data", data, "--checkpoints", cp); code != 1 {
		t.Fatalf("a foreign checkpoint naming no node: exit %d", code)
	}
}
