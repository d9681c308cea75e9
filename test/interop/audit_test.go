package interop

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/cli"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
)

func count(recs []audit.Record, event string) int {
	n := 0
	for _, r := range recs {
		if r.Event == event {
			n++
		}
	}
	return n
}

// TestAuditTrailDCMTK drives a full `ward serve` with DCMTK and checks the
// PS3.15 A.5 records: a wrong called AE title is a Security Alert, a
// storescu association is one DICOM Instances Transferred with its counts,
// a findscu is a Query carrying the identifier, a getscu is Begin
// Transferring then Instances Transferred; `ward audit verify` passes on
// the log and fails, naming the record, on an edited copy.
func TestAuditTrailDCMTK(t *testing.T) {
	requireTool(t, "echoscu", "storescu", "findscu", "getscu")
	w := startWard(t)

	// Wrong called AE title: rejected, recorded.
	if out, err := dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "NOTWARD", w.host, w.port).CombinedOutput(); err == nil {
		t.Fatalf("echoscu to a wrong called AE succeeded:\n%s", out)
	}
	recs := readAudit(t, w.dir, func(r []audit.Record) bool { return count(r, "security-alert") == 1 })
	var alert audit.Record
	for _, r := range recs {
		if r.Event == "security-alert" {
			alert = r
		}
	}
	if !strings.Contains(alert.XML, `UserID="INTRUDER"`) || !strings.Contains(alert.XML, "NOTWARD") || !strings.Contains(alert.XML, `csd-code="110113"`) {
		t.Errorf("security alert: %s", alert.XML)
	}
	// Ward is named with its node ID, in the record and in the log.
	nodeID, err := os.ReadFile(filepath.Join(w.dir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	node := strings.TrimSpace(string(nodeID))
	if !strings.Contains(alert.XML, `UserID="WARD" AlternativeUserID="`+node+`"`) {
		t.Errorf("the security alert does not name node %s: %s", node, alert.XML)
	}
	if !strings.Contains(w.log.String(), "node="+node) {
		t.Errorf("the log does not name node %s", node)
	}

	// storescu: six instances in three studies of two patients.
	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	var files []string
	for _, p := range writeOriginals(t, a) {
		files = append(files, p)
	}
	if out, err := dcmtk("storescu", append([]string{"-aet", "MODALITY", "-aec", "WARD", w.host, w.port}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	recs = readAudit(t, w.dir, func(r []audit.Record) bool { return count(r, "instances-transferred") == 1 })
	for _, r := range recs {
		if r.Event != "instances-transferred" {
			continue
		}
		m := parseXML(t, r.XML)
		total := 0
		studies := 0
		for _, o := range m.Objects {
			if o.Description != nil {
				studies++
				for _, c := range o.Description.SOPClasses {
					total += c.NumberOfInstances
				}
			}
		}
		if total != 6 || studies != 3 || m.Event.Action != audit.ActionCreate || strings.Join(r.Patients, ",") != "P1,P2" || strings.Join(r.Peers, ",") != "MODALITY" {
			t.Errorf("instances transferred: %d instances in %d studies, action %s, patients %v, peers %v\n%s", total, studies, m.Event.Action, r.Patients, r.Peers, r.XML)
		}
	}

	// findscu: one Query with the identifier.
	if out, err := dcmtk("findscu", "-S", "-aet", "VIEWER", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P2", "-k", "StudyInstanceUID", w.host, w.port).CombinedOutput(); err != nil {
		t.Fatalf("findscu: %v\n%s", err, out)
	}
	recs = readAudit(t, w.dir, func(r []audit.Record) bool { return count(r, "query") == 1 })
	for _, r := range recs {
		if r.Event == "query" {
			m := parseXML(t, r.XML)
			if len(m.Objects) != 1 || m.Objects[0].Query == "" || m.Objects[0].ID != "1.2.840.10008.5.1.4.1.2.2.1" || r.Peers[0] != "VIEWER" {
				t.Errorf("query record: %s", r.XML)
			}
		}
	}

	// getscu: Begin Transferring, then the two instances sent.
	dir := t.TempDir()
	if out, err := dcmtk("getscu", "-S", "-aet", "VIEWER", "-aec", "WARD", "-od", dir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.1.1", w.host, w.port).CombinedOutput(); err != nil {
		t.Fatalf("getscu: %v\n%s", err, out)
	}
	recs = readAudit(t, w.dir, func(r []audit.Record) bool {
		return count(r, "begin-transferring") == 1 && count(r, "instances-transferred") == 2
	})
	last := recs[len(recs)-1]
	if m := parseXML(t, last.XML); last.Event != "instances-transferred" || m.Event.Action != audit.ActionRead ||
		!strings.Contains(last.XML, `NumberOfInstances="2"`) || strings.Join(last.Patients, ",") != "P1" {
		t.Errorf("instances sent: %s", last.XML)
	}
	if n := count(recs, "application-activity"); n != 1 {
		t.Errorf("%d application activity records, want 1 (start)", n)
	}
	// Every accepted association is a successful User Authentication, the
	// rejected one a failed one.
	ok, failed := 0, 0
	for _, r := range recs {
		if r.Event == "authentication" {
			if r.Outcome == audit.OutcomeSuccess {
				ok++
			} else {
				failed++
			}
		}
	}
	if ok != 3 || failed != 1 {
		t.Errorf("authentication records: %d successful, %d failed; want 3 and 1", ok, failed)
	}

	// ward audit verify, search and tail.
	if out, code := wardCLI(t, "audit", "verify", "--data", w.dir); code != 0 || !strings.Contains(out, fmt.Sprintf("%d records (%d signed with the key", len(recs), len(recs))) || !strings.Contains(out, "chain intact") {
		t.Fatalf("audit verify: exit %d: %s", code, out)
	}
	if out, code := wardCLI(t, "audit", "search", "--data", w.dir, "--event", "security-alert", "--peer", "INTRUDER"); code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("audit search: exit %d:\n%s", code, out)
	}
	if out, code := wardCLI(t, "audit", "search", "--data", w.dir, "--patient", "P1", "--since", "1h"); code != 0 || strings.Count(out, "\n") != 3 {
		t.Errorf("audit search --patient P1 (stored, begin, sent): exit %d:\n%s", code, out)
	}
	if out, code := wardCLI(t, "audit", "tail", "--data", w.dir, "-n", "2"); code != 0 || strings.Count(out, "\n") != 2 {
		t.Errorf("audit tail -n 2: exit %d:\n%s", code, out)
	}

	// An edited copy fails, naming the record.
	b, err := os.ReadFile(filepath.Join(w.dir, "audit", audit.FileName))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	lines[2] = strings.Replace(lines[2], `"outcome":`, `"outcome": `, 1)
	edited := filepath.Join(t.TempDir(), "edited.log")
	if err := os.WriteFile(edited, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := runCLI([]string{"audit", "verify", "--file", edited, "--key", filepath.Join(w.dir, audit.KeyFileName)}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "line 3 (seq 3)") {
		t.Errorf("verify of an edited log: exit %d\n%s%s", code, out.String(), errb.String())
	}

	// No patient names in Ward's own log.
	if strings.Contains(w.log.String(), "DOE") {
		t.Errorf("a patient name in Ward's log:\n%s", w.log.String())
	}
}

func parseXML(t *testing.T, s string) *audit.Message {
	t.Helper()
	var m audit.Message
	if err := xmlUnmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
	return &m
}

var (
	xmlUnmarshal = xml.Unmarshal
	runCLI       = cli.Run
)

// TestStudyDelete: `ward study export` and `ward study delete` against a
// running ward serve (over its admin socket) and, once it is stopped,
// against the data directory itself: an export copies a study's objects
// as stored into a folder, recorded as Export to the named media; a delete
// removes a study's index rows and files and nothing else, recorded as
// Study Deleted with its reason and the operator; the chain still verifies.
func TestStudyDelete(t *testing.T) {
	requireTool(t, "storescu", "findscu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	ct, mr := filepath.Join(pydicomTestFiles, "CT_small.dcm"), filepath.Join(pydicomTestFiles, "MR_small.dcm")
	if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, ct, mr).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ctStudy, mrStudy := studyOf(t, ct), studyOf(t, mr)
	objects := func() int {
		n := 0
		filepath.WalkDir(filepath.Join(w.dir, "objects"), func(_ string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
		return n
	}
	studies := func() string {
		o, _ := dcmtk("findscu", "-S", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", w.host, w.port).CombinedOutput()
		return string(o)
	}
	if _, code := wardCLI(t, "study", "delete", ctStudy, "--data", w.dir); code == 0 {
		t.Fatal("deleted without a reason")
	}
	// Export, while serving: the study's objects as stored, into a folder.
	exp := t.TempDir()
	if o, code := wardCLI(t, "study", "export", ctStudy, "--out", exp, "--media", "cd", "--data", w.dir); code != 0 || !strings.Contains(o, "exported study") {
		t.Fatalf("export: %d %s", code, o)
	}
	files, _ := filepath.Glob(filepath.Join(exp, ctStudy, "*", "*.dcm"))
	if len(files) != 1 {
		t.Fatalf("exported files: %v", files)
	}
	if ok, diff := datasetsEqual(t, ct, files[0]); !ok {
		t.Fatalf("the exported object differs from the one sent:\n%s", diff)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "export", audit.OutcomeSuccess, ctStudy) && hasEvent(r, "export", -1, "110032")
	})
	// Delete, while serving.
	if o, code := wardCLI(t, "study", "delete", ctStudy, "--reason", "wrong patient (ticket 42)", "--data", w.dir); code != 0 || !strings.Contains(o, "1 instances") {
		t.Fatalf("delete: %d %s", code, o)
	}
	if n := objects(); n != 1 {
		t.Fatalf("%d object files after deleting one of two studies", n)
	}
	if got := studies(); !strings.Contains(got, mrStudy) || strings.Contains(got, ctStudy) {
		t.Fatalf("after the deletion:\n%s", got)
	}
	if _, code := wardCLI(t, "study", "delete", ctStudy, "--reason", "again", "--data", w.dir); code == 0 {
		t.Fatal("deleting a missing study succeeded")
	}
	recs := readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "study-deleted", audit.OutcomeSuccess, "wrong patient (ticket 42)")
	})
	for _, r := range recs {
		if r.Event == "study-deleted" && !strings.Contains(r.XML, ctStudy) {
			t.Fatalf("Study Deleted record without the study: %s", r.XML)
		}
	}
	// With ward serve stopped, the command opens the data directory.
	w.stop()
	if o, code := wardCLI(t, "study", "delete", mrStudy, "--reason", "retention period over", "--data", w.dir); code != 0 || !strings.Contains(o, "deleted study") {
		t.Fatalf("delete with ward serve stopped: %d %s", code, o)
	}
	if n := objects(); n != 0 {
		t.Fatalf("%d object files left", n)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "study-deleted", audit.OutcomeSuccess, "retention period over")
	})
	if o, code := wardCLI(t, "audit", "verify", "--data", w.dir); code != 0 {
		t.Fatalf("audit verify after the deletions: %s", o)
	}
}

// TestReplaceAudited: an object re-sent under a stored SOP Instance UID
// replaces the stored one (the default policy), recorded as DICOM Instances
// Accessed with action U for that patient's study.
func TestReplaceAudited(t *testing.T) {
	requireTool(t, "storescu")
	requireDir(t, pydicomTestFiles)
	w := startWard(t)
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	for range 2 {
		if out, err := dcmtk("storescu", "-aec", "WARD", w.host, w.port, ct).CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	recs := readAudit(t, w.dir, func(r []audit.Record) bool {
		return count(r, "instances-accessed") == 1 && count(r, "instances-transferred") == 2
	})
	for _, r := range recs {
		if r.Event == "instances-accessed" {
			m := parseXML(t, r.XML)
			if m.Event.Action != audit.ActionUpdate || !strings.Contains(r.XML, studyOf(t, ct)) || len(r.Patients) != 1 {
				t.Fatalf("Instances Accessed record: %+v", r)
			}
		}
	}
}

// TestAuditEarlyRefusalsDCMTK: a C-FIND and a C-MOVE whose identifier has
// no Query/Retrieve Level, sent by findscu and movescu, are refused by
// the DIMSE layer before they reach the archive (A900), and still
// audited: the C-FIND as a failed Query carrying its identifier, the
// C-MOVE as a Security Alert naming its destination.
func TestAuditEarlyRefusalsDCMTK(t *testing.T) {
	requireTool(t, "findscu", "movescu")
	w := startWard(t)
	out, _ := dcmtk("findscu", "-d", "-S", "-aet", "VIEWER", "-aec", "WARD", "-k", "PatientID=P2", "-k", "StudyInstanceUID", w.host, w.port).CombinedOutput()
	if !strings.Contains(string(out), "0xa900") && !strings.Contains(string(out), "0xA900") {
		t.Fatalf("findscu without a level: want status A900:\n%s", lastLines(out, 30))
	}
	out, _ = dcmtk("movescu", "-d", "-S", "-aet", "VIEWER", "-aec", "WARD", "-aem", "ELSEWHERE", "-k", "StudyInstanceUID=1.2.3", w.host, w.port).CombinedOutput()
	if !strings.Contains(string(out), "0xa900") && !strings.Contains(string(out), "0xA900") {
		t.Fatalf("movescu without a level: want status A900:\n%s", lastLines(out, 30))
	}
	recs := readAudit(t, w.dir, func(r []audit.Record) bool {
		return count(r, "query") == 1 && hasEvent(r, "security-alert", -1, "retrieve to ELSEWHERE refused")
	})
	for _, r := range recs {
		switch r.Event {
		case "query":
			m := parseXML(t, r.XML)
			if r.Outcome != audit.OutcomeMinorFailure || len(m.Objects) != 1 || m.Objects[0].Query == "" ||
				m.Objects[0].ID != "1.2.840.10008.5.1.4.1.2.2.1" || r.Peers[0] != "VIEWER" || !strings.Contains(r.XML, "Query/Retrieve Level") {
				t.Errorf("query record: %s", r.XML)
			}
		case "security-alert":
			if r.Peers[0] != "VIEWER" || !strings.Contains(r.XML, "Query/Retrieve Level") {
				t.Errorf("security alert: %s", r.XML)
			}
		}
	}
}
