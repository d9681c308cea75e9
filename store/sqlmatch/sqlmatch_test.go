package sqlmatch

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ward-pacs/ward/store"
)

// testDialect spells patterns and lists recognisably, so that the test
// sees which parts came from the dialect.
var testDialect = Dialect{
	Name: "test",
	Columns: map[string]Column{
		"PatientName":       {Level: store.LevelPatient, Expr: "p.patient_name", Norm: "p.patient_name_norm", VR: "PN"},
		"PatientID":         {Level: store.LevelPatient, Expr: "p.patient_id", VR: "LO"},
		"StudyDate":         {Level: store.LevelStudy, Expr: "st.study_date", VR: "DA"},
		"StudyInstanceUID":  {Level: store.LevelStudy, Expr: "st.study_instance_uid", VR: "UI"},
		"ModalitiesInStudy": {Level: store.LevelStudy, Expr: "x", VR: "CS", In: "st.pk IN (SELECT x.study_fk FROM series x WHERE %s)", Col: "x.modality"},
		"NumberOfFrames":    {Level: store.LevelImage, Expr: "i.number_of_frames", VR: "IS", NoMatch: true},
	},
	Text:       strings.ToUpper, // visible: every value passes through it
	Pattern:    func(col, pat string) (string, any) { return col + " PAT ?", "<" + pat + ">" },
	List:       func(col string, vals []string) (string, []any) { return col + " LIST ?", []any{vals} },
	NextPrefix: NextPrefixBytes,
	Level:      func(l store.Level) any { return int16(l) },
	True:       "T",
}

// TestWhere: the conditions and arguments each kind of key becomes, with
// the dialect's parts where they belong.
func TestWhere(t *testing.T) {
	single := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchSingle, Value: v} }
	for _, c := range []struct {
		name     string
		q        store.Query
		where    string
		args     []any
		unsuppor bool
	}{
		{"none", store.Query{Level: store.LevelStudy}, "", nil, false},
		{"single", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientID", "pid")}},
			" WHERE p.patient_id = ?", []any{"PID"}, false},
		{"PN folded", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientName", "doe^j")}},
			" WHERE p.patient_name_norm = ?", []any{store.NormalizePN("DOE^J")}, false},
		{"PN case-sensitive", store.Query{Level: store.LevelStudy, PNCaseSensitive: true, Keys: []store.Key{single("PatientName", "Doe")}},
			" WHERE p.patient_name = ?", []any{"DOE"}, false},
		{"wildcard with prefix", store.Query{Level: store.LevelStudy, PNCaseSensitive: true, Keys: []store.Key{{Attribute: "PatientName", Kind: store.MatchWildcard, Value: "do?*"}}},
			" WHERE p.patient_name >= ? AND p.patient_name < ? AND p.patient_name PAT ?", []any{"DO", "DP", "<DO?*>"}, false},
		{"universal wildcard", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "PatientID", Kind: store.MatchWildcard, Value: "**"}}},
			"", nil, false},
		{"list", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchList, Values: []string{"1.2", "1.3"}}}},
			" WHERE st.study_instance_uid LIST ?", []any{[]string{"1.2", "1.3"}}, false},
		{"range", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20201231"}}},
			" WHERE st.study_date >= ? AND st.study_date < ? AND st.study_date <> ''", []any{"20200101", "20201232"}, false},
		{"empty", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "PatientID", Kind: store.MatchEmpty}}},
			" WHERE p.patient_id = ''", nil, false},
		{"lower level", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("ModalitiesInStudy", "ct")}},
			" WHERE st.pk IN (SELECT x.study_fk FROM series x WHERE x.modality = ?)", []any{"CT"}, false},
		{"lower level empty", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "ModalitiesInStudy", Kind: store.MatchEmpty}}},
			" WHERE NOT st.pk IN (SELECT x.study_fk FROM series x WHERE x.modality <> '')", nil, false},
		// A non-driving item key that adds no condition (a range without
		// bounds) leaves a condition that holds, not "AND )".
		{"sequence", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: []store.Key{
			{Attribute: "CodingSchemeDesignator", Kind: store.MatchEmpty}, single("CodeValue", "p1"), {Attribute: "CodeMeaning", Kind: store.MatchRange}}}}},
			" WHERE st.pk IN (SELECT s0.owner_fk FROM sequence_value s0 WHERE s0.attribute = ? AND s0.level = ? AND s0.keyword = ? AND s0.value = ? AND " +
				"EXISTS (SELECT 1 FROM sequence_value s2 WHERE s2.level = s0.level AND s2.owner_fk = s0.owner_fk AND s2.attribute = s0.attribute AND s2.item = s0.item AND s2.keyword = ? AND T) AND " +
				"NOT EXISTS (SELECT 1 FROM sequence_value s3 WHERE s3.level = s0.level AND s3.owner_fk = s0.owner_fk AND s3.attribute = s0.attribute AND s3.item = s0.item AND s3.keyword = ? AND s3.value <> ''))",
			[]any{"PROCEDURECODESEQUENCE", int16(store.LevelStudy), "CODEVALUE", "P1", "CODEMEANING", "CODINGSCHEMEDESIGNATOR"}, false},
		{"return key only", store.Query{Level: store.LevelImage, Keys: []store.Key{single("NumberOfFrames", "1")}}, "", nil, true},
		{"below the level", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{single("StudyDate", "20200101")}}, "", nil, true},
		{"patient level in study root", store.Query{Level: store.LevelPatient}, "", nil, true},
		{"NUL in a pattern", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "PatientID", Kind: store.MatchWildcard, Value: "*\x00A"}}}, "", nil, true},
		{"range on a string", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "PatientID", Kind: store.MatchRange, Lo: "A"}}}, "", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, args, err := Where(&testDialect, &c.q)
			if c.unsuppor {
				if !errors.Is(err, store.ErrUnsupportedKey) || !strings.HasPrefix(err.Error(), "test: query: ") {
					t.Fatalf("err %v, want test: query: ... ErrUnsupportedKey", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w != c.where || !reflect.DeepEqual(args, c.args) {
				t.Errorf("got  %q %#v\nwant %q %#v", w, args, c.where, c.args)
			}
			if n := strings.Count(w, "?"); n != len(args) && !strings.Contains(w, " LIST ?") {
				t.Errorf("%d placeholders for %d arguments", n, len(args))
			}
		})
	}
}

func TestNextPrefix(t *testing.T) {
	// Bytes: nothing is above a last 0xFF (SQLite stores any bytes;
	// PostgreSQL's values are valid UTF-8 first, textOf).
	if got := NextPrefixBytes("a\xff"); got != "" {
		t.Errorf("NextPrefixBytes(a 0xFF) = %q, want none", got)
	}
	for _, c := range []struct{ in, bytes, utf8 string }{
		{"", "", ""},
		{"DOE", "DOF", "DOF"},
		{"é", "\xc3\xaa", "ê"},
		{"a\U0010FFFF", "a\U0010FFFF"[:4] + "\xc0", "b"},
		{"\uD7FF", "\xed\x9f\xc0", "\uE000"},
	} {
		if got := NextPrefixBytes(c.in); got != c.bytes {
			t.Errorf("NextPrefixBytes(%q) = %q, want %q", c.in, got, c.bytes)
		}
		got := NextPrefixUTF8(c.in)
		if got != c.utf8 {
			t.Errorf("NextPrefixUTF8(%q) = %q, want %q", c.in, got, c.utf8)
		}
		if !utf8.ValidString(got) {
			t.Errorf("NextPrefixUTF8(%q) = %q is not UTF-8", c.in, got)
		}
		if got != "" && !(c.in < got) {
			t.Errorf("NextPrefixUTF8(%q) = %q does not sort after it", c.in, got)
		}
	}
}

// TestSelect: the keywords down to the level (only those asked and the
// unique keys when Return is set; every one, costly ones too, when not),
// sequences last with their arguments before the WHERE clause's.
func TestSelect(t *testing.T) {
	d := testDialect
	d.Columns = map[string]Column{
		"PatientID":          {Level: store.LevelPatient, Expr: "p.patient_id", VR: "LO"},
		"NumberOfStudies":    {Level: store.LevelPatient, Expr: "count", VR: "IS", NoMatch: true, Costly: true},
		"StudyInstanceUID":   {Level: store.LevelStudy, Expr: "st.study_instance_uid", VR: "UI"},
		"SeriesInstanceUID":  {Level: store.LevelSeries, Expr: "se.series_instance_uid", VR: "UI"},
		"AccessionNumber":    {Level: store.LevelStudy, Expr: "st.accession_number", VR: "SH"},
		"StudyDescription":   {Level: store.LevelStudy, Expr: "st.study_description", VR: "LO"},
		"ReferringPhysician": {Level: store.LevelStudy, Expr: "st.referring", VR: "PN"},
	}
	d.SequenceExpr = func(sp store.SequenceSpec) string { return "SEQ(" + sp.Attribute + ")" }
	q := store.Query{Level: store.LevelStudy, Return: []string{"StudyDescription", "PatientID"},
		Keys:            []store.Key{{Attribute: "PatientID", Kind: store.MatchSingle, Value: "p"}},
		ReturnSequences: []store.SequenceSpec{{Attribute: "ProcedureCodeSequence", Level: store.LevelStudy}, {Attribute: "RequestAttributesSequence", Level: store.LevelSeries}}}
	kws, exprs, w, args, err := Select(&d, &q)
	if err != nil {
		t.Fatal(err)
	}
	// Only what Return asks and the unique keys: reading a column costs
	// on every row.
	wantKws := []string{"PatientID", "StudyDescription", "StudyInstanceUID", "ProcedureCodeSequence"}
	wantExprs := []string{"p.patient_id", "st.study_description", "st.study_instance_uid", "SEQ(ProcedureCodeSequence)"}
	if !reflect.DeepEqual(kws, wantKws) || !reflect.DeepEqual(exprs, wantExprs) {
		t.Errorf("got %v %v\nwant %v %v", kws, exprs, wantKws, wantExprs)
	}
	if w != " WHERE p.patient_id = ?" || !reflect.DeepEqual(args, []any{int16(store.LevelStudy), "PROCEDURECODESEQUENCE", "P"}) {
		t.Errorf("where %q args %#v", w, args)
	}
	q.Return = nil // all, costly ones too
	if kws, _, _, _, _ := Select(&d, &q); kws[0] != "NumberOfStudies" {
		t.Errorf("without Return: %v, want the costly NumberOfStudies too", kws)
	}
}
