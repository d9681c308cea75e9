package postgres

import (
	"testing"

	"github.com/ward-pacs/ward/store/storetest"
)

// TestInstancesPaged: Instances reads in keyset pages, each its own
// short read, with the same results and order as one query, and streams.
func TestInstancesPaged(t *testing.T) {
	db := openTest(t)
	defer db.Close()
	defer func(n int) { instancesPage = n }(instancesPage)
	storetest.TestInstancesPaged(t, db, func(n int) { instancesPage = n }, func() bool { return db.pool.Stat().AcquiredConns() != 0 })
}
