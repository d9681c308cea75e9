package archive_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
)

// evasion is a query that listed every patient to a peer without
// bulk-query (issue 14, item 3), or one of its kind.
type evasion struct {
	name  string
	class string
	id    []string
	// status is what a peer without bulk-query gets: 0124, or A900 when
	// the identifier is invalid for anyone.
	status uint16
}

var nobulk = archive.WithPrincipal(context.Background(), &archive.Principal{Grant: archive.Permissions{}})

func evasions() []evasion {
	const S, P = dimse.StudyRootFind, dimse.PatientRootFind
	na := dimse.StatusNotAuthorized
	bad := dimse.StatusDataSetMismatch
	return []evasion{
		// Hierarchical queries without the unique keys above the level.
		{"study root SERIES without StudyInstanceUID", S, []string{"QueryRetrieveLevel", "SERIES", "PatientName", "", "PatientID", "", "SeriesInstanceUID", ""}, na},
		{"study root SERIES by modality, no study", S, []string{"QueryRetrieveLevel", "SERIES", "Modality", "CT", "PatientName", ""}, na},
		{"study root SERIES by its own UID, no study", S, []string{"QueryRetrieveLevel", "SERIES", "SeriesInstanceUID", studyA + ".1", "PatientName", ""}, na},
		{"study root SERIES with StudyInstanceUID=*", S, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", "*", "PatientName", ""}, na},
		{"study root IMAGE without any UID", S, []string{"QueryRetrieveLevel", "IMAGE", "PatientName", "", "PatientID", "", "SOPInstanceUID", ""}, na},
		{"study root IMAGE without SeriesInstanceUID", S, []string{"QueryRetrieveLevel", "IMAGE", "StudyInstanceUID", studyA, "SOPInstanceUID", ""}, na},
		{"study root IMAGE by SOPInstanceUID only", S, []string{"QueryRetrieveLevel", "IMAGE", "SOPInstanceUID", studyA + ".1.1", "PatientName", ""}, na},
		{"patient root STUDY without PatientID", P, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "20200101", "PatientName", ""}, na},
		{"patient root STUDY with PatientID=*", P, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "*", "StudyInstanceUID", ""}, na},
		{"patient root SERIES without StudyInstanceUID", P, []string{"QueryRetrieveLevel", "SERIES", "PatientID", "P1", "SeriesInstanceUID", ""}, na},
		{"patient root SERIES without anything", P, []string{"QueryRetrieveLevel", "SERIES", "SeriesInstanceUID", ""}, na},
		{"patient root IMAGE without SeriesInstanceUID", P, []string{"QueryRetrieveLevel", "IMAGE", "PatientID", "P1", "StudyInstanceUID", studyA, "SOPInstanceUID", ""}, na},
		{"patient root IMAGE without PatientID", P, []string{"QueryRetrieveLevel", "IMAGE", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".1", "SOPInstanceUID", ""}, na},

		// Keys that match every value.
		{"PatientName=?*", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "?*", "PatientID", ""}, na},
		{"PatientID=*?*", S, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "*?*", "PatientName", ""}, na},
		{"ModalitiesInStudy=?*", S, []string{"QueryRetrieveLevel", "STUDY", "ModalitiesInStudy", "?*", "PatientName", ""}, na},
		{"PatientName=*<NUL>*", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "*\x00*", "PatientID", ""}, bad},
		{"PatientName=A<NUL>* (NUL cuts the pattern)", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "*\x00D*", "PatientID", ""}, bad},
		{"PatientName=** (a run of *)", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "****", "PatientID", ""}, na},
		{"PatientName=* * (a space)", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "* *", "PatientID", ""}, na},
		{"PatientName=*^* (a PN delimiter)", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "*^*", "PatientID", ""}, na},
		{"PatientName=*=* (a PN group delimiter)", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "*=*", "PatientID", ""}, na},
		{"PatientName=*<zero-width space>*", S, []string{"SpecificCharacterSet", "ISO_IR 192", "QueryRetrieveLevel", "STUDY", "PatientName", "*\u200b*", "PatientID", ""}, na},
		{"PatientName=*<ideographic space>*", S, []string{"SpecificCharacterSet", "ISO_IR 192", "QueryRetrieveLevel", "STUDY", "PatientName", "*\u3000*", "PatientID", ""}, na},
		{"PatientID=?????? (only ?)", S, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "??", "PatientName", ""}, na},
		{"AccessionNumber=* ? *", S, []string{"QueryRetrieveLevel", "STUDY", "AccessionNumber", "* ? *", "PatientName", ""}, na},
		{`AccessionNumber="" (empty-value matching)`, S, []string{"QueryRetrieveLevel", "STUDY", "AccessionNumber", `""`, "PatientName", ""}, na},
		{"StudyInstanceUID=*", S, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "*", "PatientName", ""}, na},
		{`StudyInstanceUID list with a wildcard`, S, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA + `\*`, "PatientName", ""}, bad},
		{`ModalitiesInStudy list with a wildcard`, S, []string{"QueryRetrieveLevel", "STUDY", "ModalitiesInStudy", `CT\?*`, "PatientName", ""}, bad},
		{"StudyDate=00000101-", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "00000101-", "PatientName", ""}, na},
		{"StudyDate=-99991231", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "-99991231", "PatientName", ""}, na},
		{"StudyDate=-20200102 (open start)", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "-20200102", "PatientName", ""}, na},
		{"StudyDate=19000101-20991231", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "19000101-20991231", "PatientName", ""}, na},
		{"StudyDate=20000101- (wider than a year)", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "20000101-", "PatientName", ""}, na},
		{"StudyDate=2000- (not a date)", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "2000-", "PatientName", ""}, na},
		{"StudyTime=000000-235959", S, []string{"QueryRetrieveLevel", "STUDY", "StudyTime", "000000-235959", "PatientName", ""}, na},
		{"StudyTime=-120000", S, []string{"QueryRetrieveLevel", "STUDY", "StudyTime", "-120000", "PatientName", ""}, na},
		{"PatientSex=M (coarse)", S, []string{"QueryRetrieveLevel", "STUDY", "PatientSex", "M", "PatientName", ""}, na},
		{"ModalitiesInStudy=CT (coarse)", S, []string{"QueryRetrieveLevel", "STUDY", "ModalitiesInStudy", `CT\MR\CR\US`, "PatientName", ""}, na},
		{"PatientBirthDate=-20261231", S, []string{"QueryRetrieveLevel", "STUDY", "PatientBirthDate", "-20261231", "PatientName", ""}, na},
		{"several universal keys", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "?*", "PatientID", "*", "StudyDate", "-99991231", "ModalitiesInStudy", "?*", "StudyTime", "-235959"}, na},
		{"patient root PATIENT PatientName=?*", P, []string{"QueryRetrieveLevel", "PATIENT", "PatientName", "?*", "PatientID", ""}, na},
		{"patient root PATIENT PatientID=*?*", P, []string{"QueryRetrieveLevel", "PATIENT", "PatientID", "*?*", "PatientName", ""}, na},
		{"patient root PATIENT PatientBirthDate=00000101-", P, []string{"QueryRetrieveLevel", "PATIENT", "PatientBirthDate", "00000101-", "PatientName", ""}, na},
		{"patient root PATIENT no key", P, []string{"QueryRetrieveLevel", "PATIENT", "PatientName", "", "PatientID", ""}, na},
	}
}

// TestBulkQueryRule: every evasion is refused to a requestor without
// bulk-query (0124, or A900 when invalid for anyone) with nothing sent;
// one with bulk-query gets its matches.
func TestBulkQueryRule(t *testing.T) {
	f := qrFixture(t)
	for _, c := range evasions() {
		t.Run(c.name, func(t *testing.T) {
			ms, _, err := findAs(t, f, nobulk, c.class, ident(t, c.id...))
			se := wantStatus(t, err, c.status, "")
			if se.Comment == "" {
				t.Error("no error comment")
			}
			if c.status == dimse.StatusNotAuthorized {
				// DIMSE cuts an Error Comment at 64 characters: what is
				// needed and why come first.
				short, _, _ := strings.Cut(se.Comment, " (")
				if !strings.HasPrefix(short, "bulk-query needed: ") || len(short) > 64 {
					t.Errorf("comment %q: want \"bulk-query needed: \" and the reason in 64 characters", se.Comment)
				}
			}
			if len(ms) != 0 {
				t.Errorf("%d matches sent before the refusal", len(ms))
			}
			ms, _, err = findAs(t, f, bulk, c.class, ident(t, c.id...))
			if c.status == dimse.StatusDataSetMismatch {
				wantStatus(t, err, c.status, "")
				return
			}
			if err != nil {
				t.Fatalf("with bulk-query: %v", err)
			}
		})
	}
}

// TestNarrowQueriesNeedNoBulk: hierarchical queries and keys that narrow
// are answered to a requestor without bulk-query.
func TestNarrowQueriesNeedNoBulk(t *testing.T) {
	f := qrFixture(t)
	const S, P = dimse.StudyRootFind, dimse.PatientRootFind
	recent := time.Now().UTC().AddDate(0, 0, -7).Format("20060102") + "-"
	for _, c := range []struct {
		name  string
		class string
		id    []string
		want  int
	}{
		{"STUDY PatientName=DOE*", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "DOE*", "StudyInstanceUID", ""}, 1},
		{"STUDY PatientName=*ohn", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "*ohn", "StudyInstanceUID", ""}, 1},
		{"STUDY PatientName=D?E^*", S, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "D?E^*", "StudyInstanceUID", ""}, 1},
		{"STUDY PatientID=P1", S, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "P1", "StudyInstanceUID", ""}, 1},
		{"STUDY PatientID=P*", S, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "P*", "StudyInstanceUID", ""}, 3},
		{"STUDY one day", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "20210505", "StudyInstanceUID", ""}, 1},
		{"STUDY a year", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "20200101-20201231", "StudyInstanceUID", ""}, 1},
		{"STUDY since last week", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", recent, "StudyInstanceUID", ""}, 0},
		{"STUDY a date and a time (no time stored)", S, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "20220606", "StudyTime", "-235959", "StudyInstanceUID", ""}, 0},
		{"STUDY modality and patient", S, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "P1", "ModalitiesInStudy", "CT", "StudyInstanceUID", ""}, 1},
		{"STUDY accession", S, []string{"QueryRetrieveLevel", "STUDY", "AccessionNumber", "ACC-2", "StudyInstanceUID", ""}, 1},
		{"STUDY UID list", S, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyB + `\` + studyC}, 2},
		{"STUDY a UTF-8 name", S, []string{"SpecificCharacterSet", "ISO_IR 192", "QueryRetrieveLevel", "STUDY", "PatientName", "山田*", "StudyInstanceUID", ""}, 1},
		{"SERIES of a study", S, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", studyA, "SeriesInstanceUID", "", "Modality", ""}, 2},
		{"IMAGE of a series", S, []string{"QueryRetrieveLevel", "IMAGE", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".1", "SOPInstanceUID", ""}, 2},
		{"patient root PATIENT by ID", P, []string{"QueryRetrieveLevel", "PATIENT", "PatientID", "P2", "PatientName", ""}, 1},
		{"patient root PATIENT by birth year", P, []string{"QueryRetrieveLevel", "PATIENT", "PatientBirthDate", "19500101-19501231", "PatientName", ""}, 0},
		{"patient root STUDY of a patient", P, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "P1", "StudyInstanceUID", ""}, 1},
		{"patient root STUDY of a patient, any date", P, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "P1", "StudyDate", "-99991231", "StudyInstanceUID", ""}, 1},
		{"patient root SERIES", P, []string{"QueryRetrieveLevel", "SERIES", "PatientID", "P1", "StudyInstanceUID", studyA, "SeriesInstanceUID", ""}, 2},
		{"patient root IMAGE", P, []string{"QueryRetrieveLevel", "IMAGE", "PatientID", "P1", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".2", "SOPInstanceUID", ""}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms, _, err := findAs(t, f, nobulk, c.class, ident(t, c.id...))
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != c.want {
				t.Errorf("%d matches, want %d", len(ms), c.want)
			}
		})
	}
}

// TestNoAccessIsNoBulk: without an Access in the context (the zero
// value), a universal query is refused.
func TestNoAccessIsNoBulk(t *testing.T) {
	f := qrFixture(t)
	_, _, err := findAs(t, f, context.Background(), dimse.StudyRootFind, ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", ""))
	wantStatus(t, err, dimse.StatusNotAuthorized, "bulk-query")
}

// TestJudgeQuery: the judgement on the keys as the store gets them,
// including what the C-FIND parser does not produce (a NUL, an empty list,
// a wildcard in a list), since QIDO-RS will reuse it.
func TestJudgeQuery(t *testing.T) {
	now := time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
	single := func(a, v string) store.Key { return store.Key{Attribute: a, Kind: store.MatchSingle, Value: v} }
	wild := func(a, v string) store.Key { return store.Key{Attribute: a, Kind: store.MatchWildcard, Value: v} }
	rng := func(a, lo, hi string) store.Key {
		return store.Key{Attribute: a, Kind: store.MatchRange, Lo: lo, Hi: hi}
	}
	list := func(a string, v ...string) store.Key {
		return store.Key{Attribute: a, Kind: store.MatchList, Values: v}
	}
	seq := func(items ...store.Key) store.Key {
		return store.Key{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: items}
	}
	study := func(keys ...store.Key) *store.Query { return &store.Query{Level: store.LevelStudy, Keys: keys} }
	for _, c := range []struct {
		name      string
		q         *store.Query
		universal bool
	}{
		{"no key", study(), true},
		{"single value", study(single("PatientID", "P1")), false},
		{"wildcard with a letter", study(wild("PatientName", "*A*")), false},
		{"wildcard, NUL then letters", study(wild("PatientName", "*\x00ABC")), true},
		{"single value, NUL first", study(single("PatientName", "\x00DOE")), true},
		{"wildcard of ? and *", study(wild("PatientName", "?*?**")), true},
		{"wildcard, tab", study(wild("PatientName", "*\t*")), true},
		{"wildcard, replacement character", study(wild("PatientName", "*\ufffd*")), true},
		{"wildcard, combining mark", study(wild("PatientName", "*\u0301*")), true},
		{"PN delimiters only, single", study(single("PatientName", "^^^^")), true},
		{"^ in a LO is a literal", study(wild("PatientID", "*^*")), false},
		{"empty list", study(list("StudyInstanceUID")), true},
		{"list with an empty-ish element", study(list("StudyInstanceUID", "1.2.3", " ")), true},
		{"list of UIDs", study(list("StudyInstanceUID", "1.2.3", "1.2.4")), false},
		{"empty value", study(store.Key{Attribute: "AccessionNumber", Kind: store.MatchEmpty}), true},
		{"range, no start", study(rng("StudyDate", "", "20261207")), true},
		{"range, open end, old start", study(rng("StudyDate", "20251201", "")), true},
		{"range, open end, a week", study(rng("StudyDate", "20261130", "")), false},
		{"range, open end, a year back", study(rng("StudyDate", "20251207", "")), false},
		{"range, a year", study(rng("StudyDate", "20250101", "20251231")), false},
		{"range, a leap year", study(rng("StudyDate", "20240101", "20241231")), false},
		{"range, a year and a day", study(rng("StudyDate", "20240101", "20250101")), true},
		{"range, open end, a year and a day back", study(rng("StudyDate", "20251206", "")), true},
		{"range, in the future", study(rng("StudyDate", "30000101", "")), false},
		{"range, reversed", study(rng("StudyDate", "20250101", "20240101")), false},
		{"range, partial date", study(rng("StudyDate", "2025", "2026")), true},
		{"range, DT, a month", study(rng("AcquisitionDateTime", "20261101000000", "20261130235959")), false},
		{"range on a time", study(rng("StudyTime", "120000", "120001")), true},
		{"single time", study(single("StudyTime", "120000")), true},
		{"coarse", study(single("PatientSex", "F"), single("ModalitiesInStudy", "MR"), single("IssuerOfPatientID", "HOSP")), true},
		{"coarse and narrow", study(single("ModalitiesInStudy", "MR"), rng("StudyDate", "20261207", "20261207")), false},
		{"sequence, universal items", study(seq(wild("CodeValue", "?*"), single("CodingSchemeDesignator", "DCM"))), true},
		{"sequence, a narrowing item", study(seq(single("CodeValue", "12345"))), false},
		{"keys the parser drops are not keys", study(), true},
		{"patient root STUDY, PatientID", &store.Query{Level: store.LevelStudy, PatientRoot: true, Keys: []store.Key{single("PatientID", "P1")}}, false},
		{"patient root STUDY, PatientID wildcard", &store.Query{Level: store.LevelStudy, PatientRoot: true, Keys: []store.Key{wild("PatientID", "P*")}}, true},
		{"patient root STUDY, no PatientID", &store.Query{Level: store.LevelStudy, PatientRoot: true, Keys: []store.Key{single("AccessionNumber", "A1")}}, true},
		{"SERIES, study UID", &store.Query{Level: store.LevelSeries, Keys: []store.Key{single("StudyInstanceUID", "1.2.3")}}, false},
		{"SERIES, study UID list", &store.Query{Level: store.LevelSeries, Keys: []store.Key{list("StudyInstanceUID", "1.2.3", "1.2.4")}}, true},
		{"IMAGE, study and series", &store.Query{Level: store.LevelImage, Keys: []store.Key{single("StudyInstanceUID", "1.2.3"), single("SeriesInstanceUID", "1.2.3.1")}}, false},
		{"IMAGE, series only", &store.Query{Level: store.LevelImage, Keys: []store.Key{single("SeriesInstanceUID", "1.2.3.1"), single("SOPInstanceUID", "1.2.3.1.1")}}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := archive.JudgeQuery(c.q, now)
			if r.Universal != c.universal {
				t.Fatalf("universal = %v (%s), want %v", r.Universal, r.Why, c.universal)
			}
			if r.Universal && r.Why == "" {
				t.Error("no reason given")
			}
		})
	}
}

// TestJudgeRetrieve: a retrieve names its objects by the unique key of its
// level.
func TestJudgeRetrieve(t *testing.T) {
	for _, c := range []struct {
		name      string
		q         *store.Query
		universal bool
	}{
		{"study UID", &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: "1.2"}}}, false},
		{"study UID list", &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchList, Values: []string{"1.2", "1.3"}}}}, false},
		{"no key", &store.Query{Level: store.LevelStudy}, true},
		{"only the key above", &store.Query{Level: store.LevelSeries, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: "1.2"}}}, true},
		{"wildcard", &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchWildcard, Value: "*"}}}, true},
		{"list with a wildcard", &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchList, Values: []string{"1.2", "*"}}}}, true},
		{"empty list", &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchList}}}, true},
		{"NUL", &store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: "\x001.2"}}}, true},
		{"patient ID", &store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{{Attribute: "PatientID", Kind: store.MatchSingle, Value: "P1"}}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := archive.JudgeRetrieve(c.q); r.Universal != c.universal {
				t.Fatalf("universal = %v (%s), want %v", r.Universal, r.Why, c.universal)
			}
		})
	}
}

// TestRetrieveEvasions: C-MOVE and C-GET identifiers that would select
// everything are refused with A900, with or without bulk-query.
func TestRetrieveEvasions(t *testing.T) {
	f := qrFixture(t)
	for _, c := range []struct {
		name  string
		class string
		id    []string
	}{
		{"STUDY without StudyInstanceUID", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "PatientName", ""}},
		{"STUDY with a name", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "*"}},
		{"StudyInstanceUID=*", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "*"}},
		{"StudyInstanceUID=?*", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "?*"}},
		{"StudyInstanceUID=*<NUL>*", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "*\x00*"}},
		{"StudyInstanceUID=1<NUL>", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "1\x002"}},
		{"a list with a wildcard", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA + `\*`}},
		{"an empty list", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", `\`}},
		{"SERIES with the study only", dimse.StudyRootGet, []string{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", studyA}},
		{"IMAGE with the series only", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "IMAGE", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".1"}},
		{"PATIENT with PatientID=*", dimse.PatientRootMove, []string{"QueryRetrieveLevel", "PATIENT", "PatientID", "*"}},
		{"PATIENT with PatientID=*?*", dimse.PatientRootGet, []string{"QueryRetrieveLevel", "PATIENT", "PatientID", "*?*"}},
		{"PATIENT without PatientID", dimse.PatientRootGet, []string{"QueryRetrieveLevel", "PATIENT", "PatientName", "?*"}},
		{"STUDY with a date range", dimse.StudyRootMove, []string{"QueryRetrieveLevel", "STUDY", "StudyDate", "00000101-"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, ctx := range []context.Context{nobulk, bulk} {
				ins, err := f.fe().Retrieve(ctx, &dimse.RetrieveRequest{Request: dimse.Request{Assoc: f.assoc},
					SOPClassUID: c.class, Identifier: ident(t, c.id...)})
				wantStatus(t, err, dimse.StatusDataSetMismatch, "")
				if len(ins) != 0 {
					t.Errorf("%d instances selected", len(ins))
				}
			}
		})
	}
}
