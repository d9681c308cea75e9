package server

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/encblob"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

// TestMain stops what the harness started for the package's tests (the
// PostgreSQL cluster of the backend matrix).
func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

// TestBackendMatrix runs the store conformance suite over every pairing
// of the backends this file's sibling, backends.go, composes, and checks
// that each still has the capabilities it is meant to: a backend added
// there must be added here.
//
// The "s3" blobs run against one versitygw for the test (a missing one
// skips the matrix locally and fails it under CI=true), each store
// folder getting a bucket of its own.
func TestBackendMatrix(t *testing.T) {
	s3 := harness.StartS3(t)
	s3.SetEnv(t)
	var mu sync.Mutex
	buckets := map[string]string{} // store folder -> its bucket's DSN
	s3DSN := func(dir string) string {
		mu.Lock()
		defer mu.Unlock()
		if dsn, ok := buckets[dir]; ok {
			return dsn
		}
		b, err := s3.NewBucket()
		if err != nil {
			return "s3://no-bucket/?error=" + url.QueryEscape(err.Error()) // Open fails, saying so
		}
		buckets[dir] = s3.URL(b, "ward")
		return buckets[dir]
	}
	storetest.TestMatrix(t,
		map[string]storetest.Backend{
			defaultIndex: {
				DSN: func(dir string) string { return filepath.Join(dir, "index.db") },
				Caps: []string{"Inserter", "BlobFinder", "DeferredSyncer", "DeletionRecorder", "DeleteHolder",
					"InstanceWalker", "Snapshotter", "SnapshotFiles", "Counter", "Querier", "KeyMatcher", "SequenceIndexer", "MetadataKeeper", "Scrubber", "BlobKeyLister"},
			},
			"postgres": postgresBackend(t),
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
			"s3+" + encblob.Name: {
				Blobs:    "s3",
				DSN:      s3DSN,
				Wrappers: []store.Wrapper{{Name: encblob.Name, DSN: testKeys(t, "k1")}},
				Caps: []string{"BlobWalker", "IntentReader", "BatchPublisher", "UnfinishedRemover",
					"DurableNamer", "IntentWriter", "NodeScoper"},
			},
			"s3": {
				DSN: s3DSN,
				Caps: []string{"BlobWalker", "IntentReader", "BatchPublisher", "UnfinishedRemover",
					"DurableNamer", "IntentWriter", "NodeScoper", "WholeBlobs"},
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

// postgresBackend is the PostgreSQL index on the package's cluster
// (test/harness), one database per folder: a second open of the same
// folder (TestNodes' second node) reaches the same database. Without
// PostgreSQL installed its pairings are skipped (under CI=true, failed).
func postgresBackend(t *testing.T) storetest.Backend {
	b := storetest.Backend{Caps: []string{"Inserter", "BlobFinder", "DeletionRecorder", "DeleteHolder", "BlobKeyLister",
		"InstanceWalker", "Counter", "Querier", "KeyMatcher", "SequenceIndexer", "MetadataKeeper", "Exclusive"}}
	if why := harness.PostgresMissing(); why != "" {
		if testci.CI() {
			t.Fatalf("%s (required under CI=true)", why)
		}
		b.Missing = why
		return b
	}
	pg := harness.StartPostgres(t)
	var mu sync.Mutex
	dsns := map[string]string{}
	b.DSN = func(dir string) string {
		mu.Lock()
		defer mu.Unlock()
		if dsn, ok := dsns[dir]; ok {
			return dsn
		}
		name, err := pg.CreateDatabase()
		if err != nil {
			t.Errorf("creating a database: %v", err) // the open of "" then fails
			return ""
		}
		dsns[dir] = pg.DSN(name)
		return dsns[dir]
	}
	return b
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

// TestBackupPostgresRefused: ward backup of an archive whose index is in
// PostgreSQL is refused before anything is written, saying how such an
// archive is backed up.
func TestBackupPostgresRefused(t *testing.T) {
	ctx := context.Background()
	if why := harness.PostgresMissing(); why != "" {
		testci.SkipOrFail(t, "%s", why)
	}
	data := t.TempDir()
	c := &config.Config{AETitle: "WARD", DataDir: data}
	c.Storage.Index, c.Storage.IndexDSN = "postgres", harness.StartPostgres(t).NewDatabase(t)
	st, err := store.Open(ctx, storeSpec(c, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ar := &archive.Archive{Index: st.Index, Blobs: st.Blobs, Node: "n1"}
	dir := filepath.Join(t.TempDir(), "backup")
	_, err = admin.RunBackup(ctx, ar, c, backupFolder(c), dir, archive.CopyOptions{}, func(*audit.Message) {}, audit.Node{}, "tester")
	if err == nil || !strings.Contains(err.Error(), "cannot take a snapshot") || !strings.Contains(err.Error(), "pg_dump") {
		t.Fatalf("backup of a PostgreSQL index: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused backup made its folder: %v", err)
	}
}
