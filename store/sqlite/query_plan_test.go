package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/sqlmatch"
	"github.com/ward-pacs/ward/store/storetest"
)

// TestQueryPlans checks that the common queries search indexes: no line of
// EXPLAIN QUERY PLAN may be "SCAN <table>" without an index. The plans do
// not depend on the data (Ward never runs ANALYZE), so a small index is
// enough.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, filepath.Join(t.TempDir(), "ward.db"))
	defer db.Close()
	for n := range 20 {
		if _, err := db.Put(ctx, storetest.Sample(n, n/4, n/2)); err != nil {
			t.Fatal(err)
		}
	}
	single := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchSingle, Value: v} }
	wild := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchWildcard, Value: v} }
	for _, c := range []struct {
		name string
		q    store.Query
	}{
		{"STUDY by PatientID", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientID", "PID1")}}},
		{"PATIENT by PatientID", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{single("PatientID", "PID1")}}},
		{"STUDY by PatientName prefix", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "DÜRER*")}}},
		{"STUDY by PatientName prefix case-sensitive", store.Query{Level: store.LevelStudy, PNCaseSensitive: true, Keys: []store.Key{wild("PatientName", "Dür*")}}},
		{"PATIENT by PatientName prefix", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{wild("PatientName", "DOE^J*")}}},
		{"STUDY by PatientName exact", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientName", "Doe^John")}}},
		{"STUDY by StudyDate range", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20201231"}}}},
		{"STUDY by StudyDate open range", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101"}}}},
		{"STUDY by StudyDate and time", store.Query{Level: store.LevelStudy, Keys: []store.Key{
			{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20201231"},
			{Attribute: "StudyTime", Kind: store.MatchRange, Lo: "0800", Hi: "1200"}}}},
		{"STUDY by StudyInstanceUID", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("StudyInstanceUID", "1.2.3")}}},
		{"STUDY by StudyInstanceUID list", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchList, Values: []string{"1.2.3", "1.2.4"}}}}},
		{"STUDY by AccessionNumber", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("AccessionNumber", "ACC1")}}},
		{"STUDY by ModalitiesInStudy and date", store.Query{Level: store.LevelStudy, Keys: []store.Key{
			single("ModalitiesInStudy", "CT"),
			{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20200131"}}}},
		{"SERIES within a study", store.Query{Level: store.LevelSeries, Keys: []store.Key{single("StudyInstanceUID", "1.2.3")}}},
		{"SERIES within a study, patient root", store.Query{Level: store.LevelSeries, PatientRoot: true, Keys: []store.Key{
			single("PatientID", "PID1"), single("StudyInstanceUID", "1.2.3")}}},
		{"IMAGE within a series", store.Query{Level: store.LevelImage, Keys: []store.Key{
			single("StudyInstanceUID", "1.2.3"), single("SeriesInstanceUID", "1.2.3.4")}}},
		{"STUDY by ProcedureCodeSequence code", store.Query{Level: store.LevelStudy, ReturnSequences: store.DefaultSequences(), Keys: []store.Key{
			{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: []store.Key{single("CodeValue", "CT123")}}}}},
		{"STUDY by ProcedureCodeSequence code and scheme", store.Query{Level: store.LevelStudy, Keys: []store.Key{
			{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: []store.Key{
				{Attribute: "CodingSchemeDesignator", Kind: store.MatchEmpty}, wild("CodeValue", "CT*"), single("CodingSchemeDesignator", "LOCAL")}}}}},
		{"SERIES by RequestAttributesSequence within a study", store.Query{Level: store.LevelSeries, ReturnSequences: store.DefaultSequences(), Keys: []store.Key{
			single("StudyInstanceUID", "1.2.3"),
			{Attribute: "RequestAttributesSequence", Kind: store.MatchSequence, Level: store.LevelSeries, Items: []store.Key{single("RequestedProcedureID", "RP1")}}}}},
		{"IMAGE by SOPInstanceUID", store.Query{Level: store.LevelImage, Keys: []store.Key{single("SOPInstanceUID", "1.2.3.4.5")}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			check := func(what, query string, args []any) {
				lines, err := db.explain(ctx, query, args...)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				for _, l := range lines {
					if scansTable(l) {
						t.Errorf("%s scans a table: %q\nplan: %q\nsql: %s", what, l, lines, query)
					}
				}
			}
			q := c.q
			_, query, args, err := selectQuery(&q)
			if err != nil {
				t.Fatal(err)
			}
			check("Query", query, args)
			if strings.Contains(c.name, "Sequence") {
				lines, _ := db.explain(ctx, query, args...)
				if !strings.Contains(strings.Join(lines, "\n"), "sequence_value_match_idx") {
					t.Errorf("sequence key does not search sequence_value_match_idx: %q", lines)
				}
			}
			query, args, err = instancesSeries(&q)
			if err != nil {
				t.Fatal(err)
			}
			check("Instances series", query, args)
			query, args, err = instancesQuery(&q, []int64{77, 78}, sqlmatch.Position{77, 77, 3, 7700}, instancesPage)
			if err != nil {
				t.Fatal(err)
			}
			check("Instances page", query, args)
		})
	}
}

// scansTable reports whether an EXPLAIN QUERY PLAN line reads a whole table
// ("SCAN st", not "SCAN st USING INDEX ..." or a "SCAN" of a subquery result,
// a temporary b-tree, or json_each of a parameter: the series keys of a
// page of Instances, at most instancesPage).
func scansTable(line string) bool {
	if !strings.HasPrefix(line, "SCAN ") {
		return false
	}
	return !strings.Contains(line, " USING ") && !strings.Contains(line, "CONSTANT ROW") &&
		!strings.HasPrefix(line, "SCAN (subquery") && !strings.HasPrefix(line, "SCAN json_each VIRTUAL TABLE")
}
