package server

// The composition of the store: the backends Ward is built with are
// registered by their imports here, and nowhere else; the rest of Ward
// names them only through a store.Spec. A new backend (a PostgreSQL
// index, S3 blobs) or wrapper (encryption) is one import here and a name
// in [storage].

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/encblob"    // "encrypt": encryption at rest, a blobs wrapper
	_ "github.com/ward-pacs/ward/store/fsblob"   // "fs": files, the embedded default blobs
	_ "github.com/ward-pacs/ward/store/postgres" // "postgres": an index several nodes share
	_ "github.com/ward-pacs/ward/store/s3blob"   // "s3": objects in an S3-compatible store
	_ "github.com/ward-pacs/ward/store/sqlite"   // "sqlite": the embedded default index
)

// The embedded default store, in a data directory (and in a backup
// folder, which is one): a SQLite index and files.
const (
	defaultIndex = "sqlite"
	defaultBlobs = "fs"
)

// backupFolder is what a backup folder of c's archive is made of (a data
// directory, with the embedded default blobs).
func backupFolder(c *config.Config) admin.BackupFolder {
	return admin.BackupFolder{Index: storeSpec(c, "").Index, Blobs: defaultBlobs, Layout: dataLayout}
}

// objectTrees are the directories of the default blobs (store/fsblob) in
// a data directory: the permission check at start (datadir.go) looks at
// each of them but not at the files below, which may be millions (the
// closed directories above them keep others out).
var objectTrees = map[string]bool{"objects": true, "pending": true, "tmp": true}

// storeSpec is the store c configures, opened by node: [storage] index
// and blobs as backend names with their DSNs, or as URLs whose scheme
// names the backend (config.Storage.IndexBackend; Validate has refused a
// URL Ward has no backend for, or one with a password in it).
func storeSpec(c *config.Config, node string) store.Spec {
	ib, _ := c.Storage.IndexBackend()
	bb, _ := c.Storage.BlobsBackend()
	sp := store.Spec{Index: ib.Name, IndexDSN: ib.DSN, Blobs: bb.Name, BlobsDSN: bb.DSN, Node: node}
	if sp.Index == "" || (sp.Index == defaultIndex && sp.IndexDSN == "") {
		sp.Index, sp.IndexDSN = defaultIndex, c.IndexPath()
	}
	if sp.Blobs == "" || (sp.Blobs == defaultBlobs && sp.BlobsDSN == "") {
		sp.Blobs, sp.BlobsDSN = defaultBlobs, c.BlobsPath()
	}
	// Always wrapped: without a key the wrapper only refuses a store that
	// was written encrypted (encblob: never serve ciphertext as objects).
	sp.Wrappers = []store.Wrapper{{Name: encblob.Name, DSN: c.Storage.Encryption.Keys()}}
	return sp
}

// nodeIDFile holds the node ID generated for a data directory.
const nodeIDFile = "node-id"

// nodeID is the ID of this node: [node_id] when set, else the one kept in
// DATA/node-id, generated (16 hex digits) and written there (0600) the
// first time.
func nodeID(c *config.Config) (string, error) {
	if c.NodeID != "" {
		return c.NodeID, nil
	}
	p := filepath.Join(c.DataDir, nodeIDFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if !config.ValidNodeID(id) {
			return "", fmt.Errorf("%s holds no valid node ID: remove it (a new one is generated) or set node_id", p)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("node ID: %w", err)
	}
	var r [8]byte
	_, _ = rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	if err := config.WriteFileAtomic(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("node ID: %w", err)
	}
	return id, nil
}
