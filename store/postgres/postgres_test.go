package postgres

import (
	"context"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// openTest opens a new, empty index in a database of its own on the
// package's PostgreSQL cluster.
func openTest(t *testing.T) *DB {
	t.Helper()
	dsn := harness.StartPostgres(t).NewDatabase(t)
	db, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestConformance(t *testing.T) {
	open := func(t *testing.T) store.Index { return openTest(t) }
	t.Run("Index", func(t *testing.T) { storetest.TestIndex(t, open) })
	t.Run("Query", func(t *testing.T) { storetest.TestQuery(t, open) })
	t.Run("QuerySequences", func(t *testing.T) { storetest.TestQuerySequences(t, open) })
}
