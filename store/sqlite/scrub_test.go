package sqlite

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/ward-pacs/ward/store/storetest"
)

// TestScrubLeavesNothing: once a patient's instances are deleted and the
// index scrubbed, neither the database file nor its write-ahead log holds
// the patient's name, ID or metadata, while ward serve still has the
// index open (secure_delete zeroes the rows' bytes, Scrub truncates the
// log), and with a rewrite (VACUUM) too; the other patient's rows stay.
func TestScrubLeavesNothing(t *testing.T) {
	for _, rewrite := range []bool{false, true} {
		ctx := context.Background()
		dir := t.TempDir()
		path := filepath.Join(dir, "index.db")
		db := openTest(t, path)
		gone := storetest.Sample(1, 1, 1)
		gone.PatientName, gone.PatientID = "ERASEME^QUILLON", "PIDERASE77"
		kept := storetest.Sample(2, 2, 2)
		kept.PatientName = "KEEPME^ORSOLYA"
		if _, err := db.Put(ctx, gone); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Put(ctx, kept); err != nil {
			t.Fatal(err)
		}
		if err := db.SetMetadata(ctx, gone.SOPInstanceUID, gone.BlobKey, []byte(`{"00100010":{"vr":"PN","Value":[{"Alphabetic":"ERASEME^QUILLON"}]}}`)); err != nil {
			t.Fatal(err)
		}
		if err := db.Delete(ctx, gone.SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		if err := db.Scrub(ctx, rewrite); err != nil {
			t.Fatal(err)
		}
		grep := func(needle string) []string {
			var hits []string
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(b, []byte(needle)) {
					hits = append(hits, e.Name())
				}
			}
			return hits
		}
		for _, needle := range []string{"ERASEME", "PIDERASE77"} {
			if hits := grep(needle); len(hits) > 0 {
				t.Errorf("rewrite %v: %q still in %v", rewrite, needle, hits)
			}
		}
		if hits := grep("KEEPME"); len(hits) == 0 {
			t.Errorf("rewrite %v: the other patient is gone from the files too: the test proves nothing", rewrite)
		}
		if _, err := db.Get(ctx, kept.SOPInstanceUID); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}
