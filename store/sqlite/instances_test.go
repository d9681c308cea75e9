package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/store/storetest"
)

// TestInstancesPaged: Instances reads in keyset pages, each its own read
// (no read transaction open while the caller sends objects), with the
// same results and order as one query, and streams.
func TestInstancesPaged(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
	defer func(n int) { instancesPage = n }(instancesPage)
	storetest.TestInstancesPaged(t, db, func(n int) { instancesPage = n }, func() bool { return db.rdb.Stats().InUse != 0 })
}
