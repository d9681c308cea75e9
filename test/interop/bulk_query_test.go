package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
)

// The bulk-query rule (issue 14, item 3): a peer with find but without
// bulk-query listed all 41 patients of an archive with hierarchical
// queries lacking the unique keys above their level, with keys that match
// every value and with open date ranges. These tests drive DCMTK findscu,
// movescu and getscu against `ward serve` holding 40 patients.

const bulkPatients = 40

const bulkUIDRoot = "1.2.826.0.1.3680043.10.1432.88."

// bulkSite is Ward with 40 patients, one study each (a CT and an MR
// series of one instance), and the peers NOBULK (find, move, get) and
// BULK (the same and bulk-query). The lockout is on at its default: the
// refusals here are DIMSE statuses inside admitted associations, which do
// not count towards it, so that BULK and NOBULK keep being admitted.
type bulkSite struct {
	w       *ward
	recs    []record
	destDir string
}

func startBulkSite(t *testing.T) *bulkSite {
	t.Helper()
	requireTool(t, "findscu", "movescu", "getscu", "storescu", "storescp")
	destPort, destDir := startStorescp(t)
	qr := []string{"echo", "find", "move", "get"}
	w := startWard(t, func(c *config.Config) {
		c.DICOM.LoopbackAnyAE = false
		c.DICOM.LockoutAfter = config.DefaultLockoutAfter
		c.Peers = []config.Peer{
			{AETitle: "MODALITY", Host: "127.0.0.1", Allow: []string{"store"}},
			{AETitle: "NOBULK", Host: "127.0.0.1", Allow: qr},
			{AETitle: "BULK", Host: "127.0.0.1", Allow: append(qr, "bulk-query")},
			{AETitle: "DEST", Host: "127.0.0.1", Port: destPort, Allow: []string{config.MoveDestination}},
		}
	})
	dir := t.TempDir()
	var recs []record
	for p := range bulkPatients {
		study := fmt.Sprintf("%s%d", bulkUIDRoot, p+1)
		for s, mod := range []string{"CT", "MR"} {
			series := fmt.Sprintf("%s.%d", study, s+1)
			r := record{
				patientID: fmt.Sprintf("PID%02d", p), patientName: fmt.Sprintf("FAMILY%02d^GIVEN", p),
				birthDate: fmt.Sprintf("19%02d0101", 30+p), sex: "MF"[p%2 : p%2+1],
				studyUID: study, studyDate: fmt.Sprintf("%d%02d%02d", 2018+p%8, 1+p%12, 1+p%28), studyTime: "101500",
				accession: fmt.Sprintf("ACC%03d", p), studyDesc: "STUDY",
				seriesUID: series, modality: mod, sopUID: series + ".1",
				codes: [][3]string{{fmt.Sprintf("PROC%02d", p), "LOCAL", "Procedure"}},
			}
			writeInstance(t, filepath.Join(dir, fmt.Sprintf("p%02d-%d.dcm", p, s)), r)
			recs = append(recs, r)
		}
	}
	if out, err := dcmtk("storescu", "-aet", "MODALITY", "-aec", "WARD", "+sd", w.host, w.port, dir).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	return &bulkSite{w: w, recs: recs, destDir: destDir}
}

// findAs runs findscu as aet with the model ("-S" or "-P"), the -k keys
// and, when not nil, an identifier file; it returns the response
// identifiers and findscu's output.
func (s *bulkSite) findAs(t *testing.T, aet, model string, keys []string, file string) ([]*dicom.DataSet, string) {
	t.Helper()
	out := t.TempDir()
	args := []string{model, "-d", "-aet", aet, "-aec", "WARD", "-X", "-od", out}
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	args = append(args, s.w.host, s.w.port)
	if file != "" {
		args = append(args, file)
	}
	b, _ := dcmtk("findscu", args...).CombinedOutput()
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
	return dss, string(b)
}

// queryFile writes an identifier that findscu sends as it is (values the
// command line cannot carry, such as a NUL).
func queryFile(t *testing.T, kv ...string) string {
	t.Helper()
	ds := &dicom.DataSet{}
	for i := 0; i < len(kv); i += 2 {
		tag, ok := dicom.TagByKeyword(kv[i])
		if !ok {
			t.Fatalf("unknown keyword %s", kv[i])
		}
		if kv[i+1] == "" {
			ds.Put(&dicom.Element{Tag: tag, VR: dicom.VROf(tag)})
			continue
		}
		ds.Put(&dicom.Element{Tag: tag, VR: dicom.VROf(tag), Value: evenBytes(kv[i+1])})
	}
	path := filepath.Join(t.TempDir(), "query.dcm")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta := &dicom.FileMeta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.2.2.1", MediaStorageSOPInstanceUID: bulkUIDRoot + "999", TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID}
	if err := dicom.WriteFileHeader(f, meta); err != nil {
		t.Fatal(err)
	}
	if err := dicom.WriteDataSet(f, ds, dicom.ExplicitVRLittleEndian); err != nil {
		t.Fatal(err)
	}
	return path
}

func evenBytes(v string) []byte {
	b := []byte(v)
	if len(b)%2 == 1 {
		b = append(b, ' ')
	}
	return b
}

// refusedNotAuthorized and refusedIdentifier recognise findscu's (and
// movescu's, getscu's) report of a final 0124 or A900 status.
func refusedNotAuthorized(out string) bool {
	return strings.Contains(out, "Refused: Not Authorized") || strings.Contains(out, "0x0124") || strings.Contains(out, "Status: 0x124)")
}

func refusedIdentifier(out string) bool {
	return strings.Contains(out, "IdentifierDoesNotMatchSOPClass") || strings.Contains(out, "DataSetDoesNotMatchSOPClass") || strings.Contains(out, "0xa900") || strings.Contains(out, "0xA900")
}

// TestBulkQueryEvasions: each query that listed every patient to a peer
// without bulk-query is refused to NOBULK with nothing sent (0124, or A900
// for an identifier invalid for anyone), and still answered to BULK with
// every patient; NOBULK's hierarchical and narrow queries are answered.
func TestBulkQueryEvasions(t *testing.T) {
	s := startBulkSite(t)
	first := s.recs[0]
	cases := []struct {
		name  string
		model string
		keys  []string
		file  []string // an identifier file's keyword, value pairs
		// bulkGets is how many responses BULK gets (-1: refused to it too,
		// with A900).
		bulkGets int
	}{
		{"study root SERIES without StudyInstanceUID", "-S", []string{"QueryRetrieveLevel=SERIES", "PatientName", "PatientID", "SeriesInstanceUID"}, nil, 2 * bulkPatients},
		{"study root IMAGE without StudyInstanceUID", "-S", []string{"QueryRetrieveLevel=IMAGE", "PatientName", "PatientID", "SOPInstanceUID"}, nil, 2 * bulkPatients},
		{"study root IMAGE without SeriesInstanceUID", "-S", []string{"QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + first.studyUID, "PatientName", "SOPInstanceUID"}, nil, 2},
		{"patient root SERIES without StudyInstanceUID", "-P", []string{"QueryRetrieveLevel=SERIES", "PatientID=" + first.patientID, "PatientName", "SeriesInstanceUID"}, nil, 2},
		{"patient root IMAGE without any UID", "-P", []string{"QueryRetrieveLevel=IMAGE", "PatientName", "PatientID", "SOPInstanceUID"}, nil, 2 * bulkPatients},
		{"patient root STUDY without PatientID", "-P", []string{"QueryRetrieveLevel=STUDY", "PatientName", "PatientID", "StudyInstanceUID"}, nil, bulkPatients},
		{"PatientName=?*", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=?*", "PatientID"}, nil, bulkPatients},
		{"PatientID=*?*", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientID=*?*", "PatientName"}, nil, bulkPatients},
		{"ModalitiesInStudy=?*", "-S", []string{"QueryRetrieveLevel=STUDY", "ModalitiesInStudy=?*", "PatientName", "PatientID"}, nil, bulkPatients},
		{"PatientName=*^*", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=*^*", "PatientID"}, nil, bulkPatients},
		{"PatientName=** * (matches names with a space: none here)", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=** *", "PatientID"}, nil, 0},
		{"patient root PATIENT PatientName=?*", "-P", []string{"QueryRetrieveLevel=PATIENT", "PatientName=?*", "PatientID"}, nil, bulkPatients},
		{"StudyDate=00000101-", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=00000101-", "PatientName", "PatientID"}, nil, bulkPatients},
		{"StudyDate=-99991231", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=-99991231", "PatientName", "PatientID"}, nil, bulkPatients},
		{"StudyDate=19000101-20991231", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=19000101-20991231", "PatientName", "PatientID"}, nil, bulkPatients},
		{"StudyTime=000000-235959", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyTime=000000-235959", "PatientName", "PatientID"}, nil, bulkPatients},
		{"PatientSex=F", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientSex=F", "PatientName", "PatientID"}, nil, bulkPatients / 2},
		{`AccessionNumber=""`, "-S", []string{"QueryRetrieveLevel=STUDY", `AccessionNumber=""`, "PatientName", "PatientID"}, nil, 0},
		{"ProcedureCodeSequence item CodeValue=?*", "-S", []string{"QueryRetrieveLevel=STUDY", "ProcedureCodeSequence[0].CodeValue=?*", "PatientName"}, nil, bulkPatients},
		{"ProcedureCodeSequence item scheme only", "-S", []string{"QueryRetrieveLevel=STUDY", "ProcedureCodeSequence[0].CodingSchemeDesignator=LOCAL", "PatientName"}, nil, bulkPatients},
		{"PatientName=*<NUL>*", "-S", nil, []string{"QueryRetrieveLevel", "STUDY", "PatientName", "*\x00*", "PatientID", ""}, -1},
		{"PatientID=*<NUL>X", "-S", nil, []string{"QueryRetrieveLevel", "STUDY", "PatientID", "*\x00X", "PatientName", ""}, -1},
		{"StudyInstanceUID list with *", "-S", []string{"QueryRetrieveLevel=STUDY", `StudyInstanceUID=` + first.studyUID + `\*`, "PatientName"}, nil, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := ""
			if c.file != nil {
				file = queryFile(t, c.file...)
			}
			got, out := s.findAs(t, "NOBULK", c.model, c.keys, file)
			if len(got) != 0 {
				t.Errorf("NOBULK got %d responses, want none", len(got))
			}
			if c.bulkGets < 0 {
				if !refusedIdentifier(out) {
					t.Errorf("NOBULK: want A900:\n%s", out)
				}
			} else if !refusedNotAuthorized(out) || !strings.Contains(out, "bulk-query") {
				t.Errorf("NOBULK: want 0124 with a comment naming bulk-query:\n%s", out)
			}
			got, out = s.findAs(t, "BULK", c.model, c.keys, file)
			switch {
			case c.bulkGets < 0:
				if len(got) != 0 || !refusedIdentifier(out) {
					t.Errorf("BULK: %d responses, want A900:\n%s", len(got), out)
				}
			case len(got) != c.bulkGets:
				t.Errorf("BULK got %d responses, want %d:\n%s", len(got), c.bulkGets, out)
			}
		})
	}
	// Narrow and hierarchical queries need no bulk-query.
	inYear := 0
	for _, r := range s.recs {
		if r.modality == "CT" && strings.HasPrefix(r.studyDate, "2019") {
			inYear++
		}
	}
	for _, c := range []struct {
		name  string
		model string
		keys  []string
		want  int
	}{
		{"STUDY by patient ID", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientID=PID07", "StudyInstanceUID"}, 1},
		{"STUDY by name prefix", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=family1*", "StudyInstanceUID"}, 10},
		{"STUDY in one year", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=20190101-20191231", "StudyInstanceUID"}, inYear},
		{"STUDY by procedure code", "-S", []string{"QueryRetrieveLevel=STUDY", "ProcedureCodeSequence[0].CodeValue=PROC1*", "StudyInstanceUID"}, 10},
		{"STUDY by accession", "-S", []string{"QueryRetrieveLevel=STUDY", "AccessionNumber=ACC01?", "StudyInstanceUID"}, 10},
		{"SERIES of a study", "-S", []string{"QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + first.studyUID, "SeriesInstanceUID", "Modality"}, 2},
		{"IMAGE of a series", "-S", []string{"QueryRetrieveLevel=IMAGE", "StudyInstanceUID=" + first.studyUID, "SeriesInstanceUID=" + first.seriesUID, "SOPInstanceUID"}, 1},
		{"patient root PATIENT by ID", "-P", []string{"QueryRetrieveLevel=PATIENT", "PatientID=PID03", "PatientName"}, 1},
		{"patient root STUDY of a patient", "-P", []string{"QueryRetrieveLevel=STUDY", "PatientID=PID03", "StudyInstanceUID"}, 1},
		{"patient root SERIES", "-P", []string{"QueryRetrieveLevel=SERIES", "PatientID=" + first.patientID, "StudyInstanceUID=" + first.studyUID, "SeriesInstanceUID"}, 2},
	} {
		t.Run("narrow/"+c.name, func(t *testing.T) {
			if c.want == 0 {
				t.Fatal("the corpus gives this query no match: the test would prove nothing")
			}
			got, out := s.findAs(t, "NOBULK", c.model, c.keys, "")
			if len(got) != c.want || !strings.Contains(out, "Success") {
				t.Fatalf("NOBULK got %d responses, want %d:\n%s", len(got), c.want, out)
			}
		})
	}
	readAudit(t, s.w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "security-alert", -1, "query refused") && hasEvent(r, "query", audit.OutcomeMinorFailure, "bulk-query")
	})
	// The refusals did not lock the source out.
	if got, out := s.findAs(t, "BULK", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID"}, ""); len(got) != bulkPatients {
		t.Fatalf("BULK after the refusals: %d responses, want %d:\n%s", len(got), bulkPatients, out)
	}
}

// TestRetrieveEvasions: C-MOVE and C-GET identifiers without the unique
// key of their level, or with a wildcard or a NUL in it, are refused
// (A900) to every peer, bulk-query or not, and nothing is sent; a retrieve
// that names its study or patient works without bulk-query.
func TestRetrieveEvasions(t *testing.T) {
	s := startBulkSite(t)
	first := s.recs[0]
	for _, c := range []struct {
		name  string
		model string
		keys  []string
		file  []string
	}{
		{"STUDY without StudyInstanceUID", "-S", []string{"QueryRetrieveLevel=STUDY", "PatientName=*"}, nil},
		{"StudyInstanceUID=*", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID=*"}, nil},
		{"StudyInstanceUID=?*", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID=?*"}, nil},
		{"StudyInstanceUID list with *", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + first.studyUID + `\*`}, nil},
		{"StudyInstanceUID=*<NUL>*", "-S", nil, []string{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "*\x00*"}},
		{"SERIES with the study only", "-S", []string{"QueryRetrieveLevel=SERIES", "StudyInstanceUID=" + first.studyUID}, nil},
		{"PATIENT with PatientID=*", "-P", []string{"QueryRetrieveLevel=PATIENT", "PatientID=*"}, nil},
		{"PATIENT with PatientID=*?*", "-P", []string{"QueryRetrieveLevel=PATIENT", "PatientID=*?*"}, nil},
		{"STUDY by date", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyDate=00000101-"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := ""
			if c.file != nil {
				file = queryFile(t, c.file...)
			}
			for _, aet := range []string{"NOBULK", "BULK"} {
				dir := t.TempDir()
				n, out := s.getAs(t, aet, c.model, c.keys, file, dir)
				if n != 0 || !refusedIdentifier(out) {
					t.Errorf("getscu as %s: %d objects received, want A900 and none:\n%s", aet, n, out)
				}
				before := countFiles(t, s.destDir)
				out = s.moveAs(t, aet, c.model, c.keys, file)
				if after := countFiles(t, s.destDir); after != before || !refusedIdentifier(out) {
					t.Errorf("movescu as %s: %d objects sent, want A900 and none:\n%s", aet, after-before, out)
				}
			}
		})
	}
	t.Run("named study and patient", func(t *testing.T) {
		if n, out := s.getAs(t, "NOBULK", "-S", []string{"QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + first.studyUID}, "", t.TempDir()); n != 2 {
			t.Errorf("getscu of one study: %d objects, want 2:\n%s", n, out)
		}
		before := countFiles(t, s.destDir)
		out := s.moveAs(t, "NOBULK", "-P", []string{"QueryRetrieveLevel=PATIENT", "PatientID=PID05"}, "")
		if n := countFiles(t, s.destDir) - before; n != 2 {
			t.Errorf("movescu of one patient: %d objects, want 2:\n%s", n, out)
		}
	})
}

func (s *bulkSite) getAs(t *testing.T, aet, model string, keys []string, file, dir string) (int, string) {
	t.Helper()
	args := []string{model, "-v", "-aet", aet, "-aec", "WARD", "-od", dir}
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	args = append(args, s.w.host, s.w.port)
	if file != "" {
		args = append(args, file)
	}
	out, _ := dcmtk("getscu", args...).CombinedOutput()
	return countFiles(t, dir), string(out)
}

func (s *bulkSite) moveAs(t *testing.T, aet, model string, keys []string, file string) string {
	t.Helper()
	args := []string{model, "-v", "-aet", aet, "-aec", "WARD", "-aem", "DEST"}
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	args = append(args, s.w.host, s.w.port)
	if file != "" {
		args = append(args, file)
	}
	out, _ := dcmtk("movescu", args...).CombinedOutput()
	return string(out)
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}
