package server

import (
	"path/filepath"
	"testing"

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
					"InstanceWalker", "Snapshotter", "SnapshotFiles", "Counter", "Querier", "KeyMatcher", "SequenceIndexer"},
			},
		},
		map[string]storetest.Backend{
			defaultBlobs: {
				DSN: func(dir string) string { return dir },
				Caps: []string{"BlobWalker", "IntentReader", "BatchPublisher", "SpaceReporter", "UnfinishedRemover",
					"DurableNamer", "IntentWriter", "NodeScoper"},
			},
		})
}
