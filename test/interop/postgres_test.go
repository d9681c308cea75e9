package interop

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/test/harness"
)

// withPostgres configures a Ward's index in the PostgreSQL database dsn.
func withPostgres(dsn string) func(*config.Config) {
	return func(c *config.Config) { c.Storage.Index, c.Storage.IndexDSN = "postgres", dsn }
}

// TestFindscuMatchingPostgres: DCMTK findscu gets the same matches from
// Ward with its index in PostgreSQL (a throwaway cluster on a unix
// socket) as TestFindscuMatching from the embedded one: every matching
// type, both models, every level, UTF-8 names.
func TestFindscuMatchingPostgres(t *testing.T) {
	requireTool(t, "findscu", "storescu")
	dsn := harness.StartPostgres(t).NewDatabase(t)
	dir := t.TempDir()
	recs := matchCorpus(t, dir)
	w := startWard(t, withPostgres(dsn))
	if out, err := dcmtk("storescu", "-aec", "WARD", "+sd", w.host, w.port, dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	findscuMatching(t, w, recs)
}

// TestPostgresTwoNodes: two Wards with data directories of their own
// share one PostgreSQL index: what storescu stores through one, findscu
// finds through the other, and a C-STORE of the same objects through the
// second replaces them (on_duplicate) without a second row.
func TestPostgresTwoNodes(t *testing.T) {
	requireTool(t, "findscu", "storescu")
	dsn := harness.StartPostgres(t).NewDatabase(t)
	dir := t.TempDir()
	recs := matchCorpus(t, dir)
	a := startWard(t, withPostgres(dsn))
	b := startWard(t, withPostgres(dsn))
	if out, err := dcmtk("storescu", "-aec", "WARD", "+sd", a.host, a.port, dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu to node a: %v\n%s", err, out)
	}
	all := func(record) bool { return true }
	want := distinct(recs, all, func(r record) string { return r.sopUID })
	series := map[string]string{} // series -> study
	for _, r := range recs {
		series[r.seriesUID] = r.studyUID
	}
	check := func(w *ward, what string) {
		t.Helper()
		var got []string
		for se, st := range series {
			got = append(got, findscuResults(t, w, "-S", []string{"QueryRetrieveLevel=IMAGE",
				"StudyInstanceUID=" + st, "SeriesInstanceUID=" + se, "SOPInstanceUID"}, dicom.SOPInstanceUID)...)
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: %d instances %v, want %d %v", what, len(got), got, len(want), want)
		}
	}
	check(b, "node b, after stores through node a")
	if out, err := dcmtk("storescu", "-aec", "WARD", "+sd", b.host, b.port, dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu to node b: %v\n%s", err, out)
	}
	check(a, "node a, after the same objects through node b")
}

// TestFindscuPostgresDown: while the PostgreSQL index is down, DCMTK
// findscu's C-FIND is refused with A700 (Refused: Out of Resources, the
// C-FIND status that means try again; it was C001, unable to process)
// and an Error Comment that says to try again, whole (64 characters at
// most); when PostgreSQL is back the same query is answered, without a
// restart of Ward.
func TestFindscuPostgresDown(t *testing.T) {
	requireTool(t, "findscu", "storescu")
	pg := harness.NewPostgres(t)
	dsn := pg.NewDatabase(t)
	dir := t.TempDir()
	recs := matchCorpus(t, dir)
	w := startWard(t, withPostgres(dsn))
	if out, err := dcmtk("storescu", "-aec", "WARD", "+sd", w.host, w.port, dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	keys := []string{"QueryRetrieveLevel=STUDY", "PatientID=" + recs[0].patientID, "StudyInstanceUID"}
	want := findscuResults(t, w, "-S", keys, dicom.StudyInstanceUID)
	if len(want) == 0 {
		t.Fatal("no match before the outage")
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	args := []string{"-d", "-S", "-aec", "WARD", "-aet", "FINDSCU"}
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	out, _ := dcmtk("findscu", append(args, w.host, w.port)...).CombinedOutput()
	if !strings.Contains(string(out), "0xa700") {
		t.Errorf("C-FIND with PostgreSQL down: not A700:\n%s", out)
	}
	if !strings.Contains(string(out), "[store unavailable, try again later (querying the index)") {
		t.Errorf("C-FIND with PostgreSQL down: no whole comment saying to try again:\n%s", out)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if got := findscuResults(t, w, "-S", keys, dicom.StudyInstanceUID); !slices.Equal(got, want) {
		t.Errorf("after PostgreSQL is back: %v, want %v", got, want)
	}
}
