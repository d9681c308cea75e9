package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
)

// record is what the test knows of one generated instance: the
// expectations of every query are computed from these, never from Ward's
// answers.
type record struct {
	patientID, patientName, birthDate, sex    string
	studyUID, studyDate, studyTime, accession string
	studyDesc                                 string
	seriesUID, modality                       string
	sopUID                                    string
	// codes are the study's ProcedureCodeSequence items: code value,
	// coding scheme designator, code meaning.
	codes [][3]string
}

// procedureCodes gives study s of patient p its procedure codes: one or
// two items, schemes differing, a non-ASCII meaning, some studies none.
func procedureCodes(p, s int) [][3]string {
	if p == 4 {
		return nil
	}
	scheme := "LOCAL"
	if p%2 == 1 {
		scheme = "99WARD"
	}
	codes := [][3]string{{fmt.Sprintf("PROC%d", p%4), scheme, fmt.Sprintf("Procedure %d", p%4)}}
	if s == 1 {
		codes = append(codes, [3]string{"CT123", "LOCAL", "CT Thorax"})
	}
	if p == 6 {
		codes[0][2] = "Kopf Übersicht"
	}
	return codes
}

const uidRoot = "1.2.826.0.1.3680043.10.1432.77."

// matchCorpus writes a small corpus covering what the matching types need:
// names differing in case, prefixes and middle letters, dates over several
// years, empty accession numbers, two modalities per study.
func matchCorpus(t *testing.T, dir string) []record {
	t.Helper()
	names := []string{"DOE^JOHN", "DOERR^ANNA", "MCDOE^PAUL", "Doe^Jane", "DUE^MAX", "SMITH^ANNA", "Müller^Jürgen", "山田^太郎"}
	var recs []record
	n := 0
	for p, name := range names {
		for s := 0; s < 2; s++ {
			studyUID := fmt.Sprintf("%s%d.%d", uidRoot, p+1, s+1)
			date := fmt.Sprintf("%d%02d%02d", 2018+(p+s)%6, 1+(p*3+s)%12, 1+(p+7*s)%28)
			tm := fmt.Sprintf("%02d%02d00", 7+(p+s)%12, (p*13+s*7)%60)
			acc := ""
			if (p+s)%3 != 0 {
				acc = fmt.Sprintf("ACC%03d%d", p, s)
			}
			for se, mod := range []string{"CT", "MR"} {
				if p%3 == 2 && mod == "MR" {
					continue // some studies have CT only
				}
				seriesUID := fmt.Sprintf("%s.%d", studyUID, se+1)
				for i := 0; i < 2; i++ {
					n++
					r := record{
						patientID: fmt.Sprintf("PID%02d", p), patientName: name, birthDate: fmt.Sprintf("19%02d0101", 40+p), sex: "MF"[p%2 : p%2+1],
						studyUID: studyUID, studyDate: date, studyTime: tm, accession: acc, studyDesc: "STUDY " + mod,
						seriesUID: seriesUID, modality: mod, sopUID: fmt.Sprintf("%s.%d", seriesUID, i+1),
						codes: procedureCodes(p, s),
					}
					writeInstance(t, filepath.Join(dir, fmt.Sprintf("i%03d.dcm", n)), r)
					recs = append(recs, r)
				}
			}
		}
	}
	return recs
}

func writeInstance(t *testing.T, path string, r record) {
	t.Helper()
	const sc = "1.2.840.10008.5.1.4.1.1.7" // Secondary Capture Image Storage
	ds := &dicom.DataSet{}
	ds.Set(dicom.SpecificCharacterSet, "ISO_IR 192")
	ds.Set(dicom.SOPClassUID, sc)
	ds.Set(dicom.SOPInstanceUID, r.sopUID)
	ds.Set(dicom.StudyDate, r.studyDate)
	ds.Set(dicom.StudyTime, r.studyTime)
	ds.Set(dicom.AccessionNumber, r.accession)
	ds.Set(dicom.Modality, r.modality)
	ds.Set(dicom.StudyDescription, r.studyDesc)
	ds.Set(dicom.PatientName, r.patientName)
	ds.Set(dicom.PatientID, r.patientID)
	ds.Set(dicom.PatientBirthDate, r.birthDate)
	ds.Set(dicom.PatientSex, r.sex)
	ds.Set(dicom.StudyInstanceUID, r.studyUID)
	ds.Set(dicom.SeriesInstanceUID, r.seriesUID)
	if r.codes != nil {
		seq := &dicom.Element{Tag: tagProcedureCodeSequence, VR: "SQ"}
		for _, c := range r.codes {
			it := &dicom.DataSet{}
			for i, kw := range []string{"CodeValue", "CodingSchemeDesignator", "CodeMeaning"} {
				tag, _ := dicom.TagByKeyword(kw)
				it.SetIn([]string{"ISO_IR 192"}, tag, c[i])
			}
			seq.Items = append(seq.Items, it)
		}
		ds.Put(seq)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta := &dicom.FileMeta{MediaStorageSOPClassUID: sc, MediaStorageSOPInstanceUID: r.sopUID, TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID}
	if err := dicom.WriteFileHeader(f, meta); err != nil {
		t.Fatal(err)
	}
	if err := dicom.WriteDataSet(f, ds, dicom.ExplicitVRLittleEndian); err != nil {
		t.Fatal(err)
	}
}

// distinct returns the sorted distinct values of key over the records that
// pass keep.
func distinct(recs []record, keep func(record) bool, key func(record) string) []string {
	set := map[string]bool{}
	for _, r := range recs {
		if keep(r) {
			set[key(r)] = true
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

var tagProcedureCodeSequence, _ = dicom.TagByKeyword("ProcedureCodeSequence")

// findscuResults runs findscu with -X and returns the sorted values of the
// attribute tag in the responses.
func findscuResults(t *testing.T, w *ward, model string, keys []string, tag dicom.Tag) []string {
	t.Helper()
	var vals []string
	for _, ds := range findscuResponses(t, w, model, keys) {
		vals = append(vals, ds.String(tag))
	}
	sort.Strings(vals)
	return vals
}

// findscuResponses runs findscu with -X and returns the response
// identifiers.
func findscuResponses(t *testing.T, w *ward, model string, keys []string) []*dicom.DataSet {
	t.Helper()
	out := t.TempDir()
	args := []string{model, "-aec", "WARD", "-aet", "FINDSCU", "-X", "-od", out}
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	args = append(args, w.host, w.port)
	b, err := dcmtk("findscu", args...).CombinedOutput()
	if err != nil || strings.Contains(string(b), "E: ") || strings.Contains(string(b), "F: ") {
		t.Fatalf("findscu %v: %v\n%s", keys, err, b)
	}
	files, _ := filepath.Glob(filepath.Join(out, "rsp*.dcm"))
	var dss []*dicom.DataSet
	for _, f := range files {
		meta, rc, err := dicom.OpenFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := dicom.ReadDataSet(rc, dicom.LookupTransferSyntax(meta.TransferSyntaxUID), 1<<20)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		dss = append(dss, ds)
	}
	return dss
}

// TestFindscuMatching drives DCMTK findscu (-S and -P, each level, each
// matching type of PS3.4 C.2.2.2) against Ward holding a generated corpus,
// and compares the matches with those computed from the corpus itself.
func TestFindscuMatching(t *testing.T) {
	requireTool(t, "findscu", "storescu")
	dir := t.TempDir()
	recs := matchCorpus(t, dir)
	w := startWard(t)
	if out, err := dcmtk("storescu", "-aec", "WARD", "+sd", w.host, w.port, dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	findscuMatching(t, w, recs)
}

// findscuMatching runs the queries of TestFindscuMatching against w,
// which holds recs.
func findscuMatching(t *testing.T, w *ward, recs []record) {
	all := func(record) bool { return true }
	study := func(r record) string { return r.studyUID }
	upper := strings.ToUpper
	hasModality := func(studyUID, mod string) bool {
		return slices.ContainsFunc(recs, func(r record) bool { return r.studyUID == studyUID && r.modality == mod })
	}
	firstStudy, secondStudy := recs[0].studyUID, recs[len(recs)-1].studyUID
	firstSeries := recs[0].seriesUID
	cases := []struct {
		name  string
		model string
		keys  []string
		tag   dicom.Tag
		want  []string
	}{
		{"universal STUDY", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, all, study)},
		{"single value PatientID", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientID=PID03", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return r.patientID == "PID03" }, study)},
		{"single value PN is case-insensitive", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=doe^jane", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return upper(r.patientName) == "DOE^JANE" }, study)},
		{"prefix wildcard", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=DOE*", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return strings.HasPrefix(upper(r.patientName), "DOE") }, study)},
		{"? wildcard", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=D?E^*", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool {
				n := upper(r.patientName)
				return len(n) > 4 && n[0] == 'D' && n[2:4] == "E^"
			}, study)},
		{"inner wildcard", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=*ANNA", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return strings.HasSuffix(upper(r.patientName), "ANNA") }, study)},
		{"UTF-8 name", "-S", []string{"SpecificCharacterSet=ISO_IR 192", "QueryRetrieveLevel=STUDY", "PatientName=山田*", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return strings.HasPrefix(r.patientName, "山田") }, study)},
		{"UID list", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + firstStudy + `\` + secondStudy}, dicom.StudyInstanceUID,
			[]string{firstStudy, secondStudy}},
		{"date range", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=20200101-20211231", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return r.studyDate >= "20200101" && r.studyDate <= "20211231" }, study)},
		{"open date range (from)", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=20220101-", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return r.studyDate >= "20220101" }, study)},
		{"open date range (until)", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=-20191231", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return r.studyDate <= "20191231" }, study)},
		{"time range", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyTime=080000-120000", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return r.studyTime >= "080000" && r.studyTime <= "120000" }, study)},
		{"empty value matching", "-S", []string{"QueryRetrieveLevel=STUDY", `AccessionNumber=""`, "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return r.accession == "" }, study)},
		{"ModalitiesInStudy", "-S", []string{"QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return hasModality(r.studyUID, "MR") }, study)},
		{"PATIENT level, patient root", "-P", []string{"QueryRetrieveLevel=PATIENT", "PatientName=*ANNA", "PatientID"}, dicom.PatientID,
			distinct(recs, func(r record) bool { return strings.HasSuffix(upper(r.patientName), "ANNA") }, func(r record) string { return r.patientID })},
		{"STUDY level, patient root", "-P", []string{"QueryRetrieveLevel=STUDY", "PatientID=PID01", "StudyInstanceUID"}, dicom.StudyInstanceUID,
			distinct(recs, func(r record) bool { return r.patientID == "PID01" }, study)},
		{"SERIES level within a study", "-S", []string{"QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + firstStudy, "SeriesInstanceUID"}, dicom.SeriesInstanceUID,
			distinct(recs, func(r record) bool { return r.studyUID == firstStudy }, func(r record) string { return r.seriesUID })},
		{"SERIES level, modality", "-S", []string{"QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + firstStudy, "Modality=MR", "SeriesInstanceUID"}, dicom.SeriesInstanceUID,
			distinct(recs, func(r record) bool { return r.studyUID == firstStudy && r.modality == "MR" }, func(r record) string { return r.seriesUID })},
		{"IMAGE level, patient root", "-P", []string{"QueryRetrieveLevel=IMAGE", "PatientID=" + recs[0].patientID, "StudyInstanceUID=" + firstStudy, "SeriesInstanceUID=" + firstSeries, "SOPInstanceUID"}, dicom.SOPInstanceUID,
			distinct(recs, func(r record) bool { return r.seriesUID == firstSeries }, func(r record) string { return r.sopUID })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.want) == 0 {
				t.Fatal("the corpus gives this query no match: the test would prove nothing")
			}
			got := findscuResults(t, w, c.model, c.keys, c.tag)
			if !slices.Equal(got, c.want) {
				t.Fatalf("findscu %v\n got %d: %v\nwant %d: %v", c.keys, len(got), got, len(c.want), c.want)
			}
		})
	}
}

// TestFindscuSequenceMatching drives findscu with sequence matching keys
// (PS3.4 C.2.2.2.6) on ProcedureCodeSequence, stored through storescu,
// and checks the matches and the returned items against the corpus.
func TestFindscuSequenceMatching(t *testing.T) {
	requireTool(t, "findscu", "storescu")
	dir := t.TempDir()
	recs := matchCorpus(t, dir)
	w := startWard(t)
	if out, err := dcmtk("storescu", "-aec", "WARD", "+sd", w.host, w.port, dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	anyItem := func(f func(c [3]string) bool) func(record) bool {
		return func(r record) bool { return slices.ContainsFunc(r.codes, f) }
	}
	all := func(record) bool { return true }
	const seq = "ProcedureCodeSequence[0]."
	for _, c := range []struct {
		name  string
		keys  []string
		match func(record) bool
		ret   []int // the item attributes returned: 0 value, 1 scheme, 2 meaning
	}{
		{"single value", []string{seq + "CodeValue=CT123"},
			anyItem(func(c [3]string) bool { return c[0] == "CT123" }), []int{0}},
		{"value and scheme in one item", []string{seq + "CodeValue=PROC1", seq + "CodingSchemeDesignator=99WARD", seq + "CodeMeaning"},
			anyItem(func(c [3]string) bool { return c[0] == "PROC1" && c[1] == "99WARD" }), []int{0, 1, 2}},
		{"not across items", []string{seq + "CodeValue=CT123", seq + "CodingSchemeDesignator=99WARD"},
			anyItem(func(c [3]string) bool { return c[0] == "CT123" && c[1] == "99WARD" }), []int{0, 1}},
		{"wildcard", []string{seq + "CodeValue=PROC?", seq + "CodingSchemeDesignator=LOC*"},
			anyItem(func(c [3]string) bool { return strings.HasPrefix(c[0], "PROC") && strings.HasPrefix(c[1], "LOC") }), []int{0, 1}},
		{"UTF-8 meaning", []string{"SpecificCharacterSet=ISO_IR 192", seq + "CodeMeaning=Kopf*"},
			anyItem(func(c [3]string) bool { return strings.HasPrefix(c[2], "Kopf") }), []int{2}},
		{"return key", []string{seq + "CodeValue", seq + "CodeMeaning"}, all, []int{0, 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			keys := append([]string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID"}, c.keys...)
			want := distinct(recs, c.match, func(r record) string { return r.studyUID })
			// "not ..." cases expect no match: each key alone matches some.
			if len(want) == 0 && !strings.HasPrefix(c.name, "not ") {
				t.Fatal("the corpus gives this query no match: the test would prove nothing")
			}
			codes := map[string][][3]string{}
			for _, r := range recs {
				codes[r.studyUID] = r.codes
			}
			var got []string
			for _, ds := range findscuResponses(t, w, "-S", keys) {
				uid := ds.String(dicom.StudyInstanceUID)
				got = append(got, uid)
				e := ds.Get(tagProcedureCodeSequence)
				if e == nil {
					t.Errorf("%s: no ProcedureCodeSequence returned", uid)
					continue
				}
				if len(e.Items) != len(codes[uid]) {
					t.Errorf("%s: %d items returned, want %d", uid, len(e.Items), len(codes[uid]))
					continue
				}
				cs := []string{ds.String(dicom.SpecificCharacterSet)}
				for i, it := range e.Items {
					for _, j := range c.ret {
						tag, _ := dicom.TagByKeyword([]string{"CodeValue", "CodingSchemeDesignator", "CodeMeaning"}[j])
						if v := it.StringIn(cs, tag); v != codes[uid][i][j] {
							t.Errorf("%s item %d: %s = %q, want %q", uid, i, dicom.Keyword(tag), v, codes[uid][i][j])
						}
					}
					if len(it.Elements) != len(c.ret) {
						t.Errorf("%s item %d: %d attributes returned, want the %d requested", uid, i, len(it.Elements), len(c.ret))
					}
				}
			}
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Fatalf("findscu %v\n got %d: %v\nwant %d: %v", keys, len(got), got, len(want), want)
			}
		})
	}
}
