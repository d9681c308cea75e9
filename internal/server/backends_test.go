package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/encblob"
	"github.com/ward-pacs/ward/store/storetest"
)

// TestBackendMatrix runs the store conformance suite over every pairing
// of the backends this file's sibling, backends.go, composes, and checks
// that each still has the capabilities it is meant to: a backend added
// there must be added here.
func TestBackendMatrix(t *testing.T) {
	storetest.TestMatrix(t,
		map[string]storetest.Backend{
			defaultIndex: {
				DSN: func(dir string) string { return filepath.Join(dir, "index.db") },
				Caps: []string{"Inserter", "BlobFinder", "DeferredSyncer", "DeletionRecorder", "DeleteHolder",
					"InstanceWalker", "Snapshotter", "SnapshotFiles", "Counter", "Querier", "KeyMatcher", "SequenceIndexer", "MetadataKeeper"},
			},
		},
		map[string]storetest.Backend{
			defaultBlobs: {
				DSN: func(dir string) string { return dir },
				Caps: []string{"BlobWalker", "IntentReader", "BatchPublisher", "SpaceReporter", "UnfinishedRemover",
					"DurableNamer", "IntentWriter", "NodeScoper"},
			},
			defaultBlobs + "+" + encblob.Name: {
				Blobs: defaultBlobs,
				DSN:   func(dir string) string { return dir },
				// The key file's content as the wrapper's DSN (as from
				// the environment).
				Wrappers: []store.Wrapper{{Name: encblob.Name, DSN: testKeys(t, "k1")}},
				Caps: []string{"BlobWalker", "IntentReader", "BatchPublisher", "SpaceReporter", "UnfinishedRemover",
					"DurableNamer", "IntentWriter", "NodeScoper"},
			},
		})
}

// testKeys is the content of a key file with the KEKs ids, the last one
// current.
func testKeys(t testing.TB, ids ...string) string {
	t.Helper()
	var s strings.Builder
	for i, id := range ids {
		l, err := encblob.NewKeyLine(id, i == len(ids)-1)
		if err != nil {
			t.Fatal(err)
		}
		s.WriteString(l + "\n")
	}
	return s.String()
}

// TestNodeID: the node ID is generated once into DATA/node-id (0600) and
// read back at every start; node_id overrides it; a damaged file is
// refused rather than replaced (the ID names the node's work in a shared
// store).
func TestNodeID(t *testing.T) {
	dir := t.TempDir()
	c := &config.Config{DataDir: dir}
	id, err := nodeID(c)
	if err != nil || !config.ValidNodeID(id) {
		t.Fatalf("nodeID = %q, %v", id, err)
	}
	fi, err := os.Stat(filepath.Join(dir, nodeIDFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node-id file: %v, %v", fi, err)
	}
	if again, err := nodeID(c); err != nil || again != id {
		t.Errorf("second start: %q, %v, want %q", again, err, id)
	}
	c.NodeID = "ward-2"
	if got, err := nodeID(c); err != nil || got != "ward-2" {
		t.Errorf("configured: %q, %v", got, err)
	}
	c.NodeID = ""
	if err := os.WriteFile(filepath.Join(dir, nodeIDFile), []byte("../x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := nodeID(c); err == nil {
		t.Errorf("a damaged node-id file gave %q", got)
	}
	if err := (&config.Config{AETitle: "WARD", DataDir: dir, NodeID: "a.b"}).Validate(); err == nil || !strings.Contains(err.Error(), "node_id") {
		t.Errorf("Validate of node_id a.b: %v", err)
	}
}

// TestBackupNeedsSnapshotter: an index without the Snapshotter
// capability has no fallback for a backup: it is refused, clearly, before
// anything is written.
func TestBackupNeedsSnapshotter(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	c := &config.Config{AETitle: "WARD", DataDir: data}
	st, err := store.Open(ctx, storeSpec(c, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bare := struct{ store.Index }{st.Index}
	ar := &archive.Archive{Index: bare, Blobs: st.Blobs, Node: "n1"}
	dir := filepath.Join(t.TempDir(), "backup")
	_, err = admin.RunBackup(ctx, ar, c, backupFolder(c), dir, archive.CopyOptions{}, func(*audit.Message) {}, audit.Node{}, "tester")
	if err == nil || !strings.Contains(err.Error(), "cannot take a snapshot") {
		t.Fatalf("backup over an index without snapshots: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused backup made its folder: %v", err)
	}
}
