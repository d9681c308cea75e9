package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

func TestQuery(t *testing.T) {
	storetest.TestQuery(t, func(t *testing.T) store.Index {
		db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
		t.Cleanup(func() { checkCounters(t, db) })
		return db
	})
}

func TestQuerySequences(t *testing.T) {
	storetest.TestQuerySequences(t, func(t *testing.T) store.Index {
		db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
		t.Cleanup(func() { checkCounters(t, db) })
		return db
	})
}
