package dicomweb

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
)

// testArchive is a real archive (SQLite index, file blobs) in a temporary
// directory, closed when the test ends; edit, if not nil, sets its
// options before it opens.
func testArchive(t testing.TB, edit func(*archive.Archive)) (*archive.Archive, *sqlite.DB) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := fsblob.Open(ctx, dir)
	if err != nil {
		idx.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: idx, Blobs: bs}
	if edit != nil {
		edit(ar)
	}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ar.Close)
	return ar, idx
}
