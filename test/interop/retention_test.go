package interop

import (
	"bytes"
	"database/sql"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	_ "modernc.org/sqlite" // the index, edited while Ward is stopped
)

// paddedUIDRE finds the Study Instance UIDs in findscu's output (an odd
// length one padded with a space).
var paddedUIDRE = regexp.MustCompile(`\(0020,000d\) UI \[([0-9.]+)[ \x00]?\]`)

// writeRetentionStudy writes n objects of one study (one series) of a
// patient into dir, in Explicit VR Little Endian, and returns the study UID.
func writeRetentionStudy(t *testing.T, dir, pid, name, study, date, modality string, n int) {
	t.Helper()
	class := map[string]string{"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}[modality]
	for i := 1; i <= n; i++ {
		uid := study + ".1." + string(rune('0'+i))
		ds := &dicom.DataSet{}
		ds.Set(dicom.SOPClassUID, class)
		ds.Set(dicom.SOPInstanceUID, uid)
		ds.Set(dicom.StudyDate, date)
		ds.Set(dicom.Modality, modality)
		ds.Set(dicom.PatientName, name)
		ds.Set(dicom.PatientID, pid)
		ds.Set(dicom.StudyInstanceUID, study)
		ds.Set(dicom.SeriesInstanceUID, study+".1")
		body, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		meta := &dicom.FileMeta{MediaStorageSOPClassUID: class, MediaStorageSOPInstanceUID: uid, TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID}
		if err := dicom.WriteFileHeader(&buf, meta); err != nil {
			t.Fatal(err)
		}
		buf.Write(body)
		if err := os.WriteFile(filepath.Join(dir, uid+".dcm"), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// grepTree lists the files under root (less those under skip) that hold
// any of needles.
func grepTree(t *testing.T, root, skip string, needles ...string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skip != "" && path == skip {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSocket != 0 || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				hits = append(hits, path+": "+n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// TestRetentionAndErasure drives retention and erasure against studies
// sent by DCMTK storescu: ward retention plan lists only the study the
// rules make due (by study date and modality; a study from a source whose
// rule counts by receipt is held by that longer rule), run refuses a pass
// above max_percent and deletes it with --force; findscu then finds the
// rest. ward patient delete erases the other patient's studies: findscu
// and getscu find nothing of them, the audit trail records each as Study
// Deleted with the reason and the operator and without the name, and
// neither the data directory (index and objects) nor, after the next
// ward backup, the backup folder holds the patient's name or ID. With
// Ward stopped, a rule by receipt deletes the study received (as the
// index records) 60 days ago.
func TestRetentionAndErasure(t *testing.T) {
	requireTool(t, "storescu", "findscu", "getscu")
	const (
		nameA, pidA = "ALPHA^QUENTIN", "PIDQA7730"
		nameB, pidB = "BRAVO^ZEPHYRINE", "PIDZX9041"
	)
	w := startWard(t, func(c *config.Config) {
		c.Retention = config.Retention{Interval: "off", Rules: []config.RetentionRule{
			{Name: "ct-10y", OlderThan: "10y", Modality: []string{"CT"}},
			{Name: "mr-30y", OlderThan: "30y", Modality: []string{"MR"}},
			{Name: "oldct-received", OlderThan: "1d", By: "received", Source: []string{"OLDCT"}},
		}}
	})
	src := t.TempDir()
	a1, a2, b1, b2 := "1.2.826.0.1.3680043.10.1001.1", "1.2.826.0.1.3680043.10.1001.2", "1.2.826.0.1.3680043.10.1001.3", "1.2.826.0.1.3680043.10.1001.4"
	dirs := map[string]string{}
	for _, s := range []struct{ uid, pid, name, date, mod string }{
		{a1, pidA, nameA, "20050101", "CT"}, {a2, pidA, nameA, "20240101", "CT"},
		{b1, pidB, nameB, "20060101", "MR"}, {b2, pidB, nameB, "20100101", "CT"},
	} {
		d := filepath.Join(src, s.uid)
		os.MkdirAll(d, 0o700)
		writeRetentionStudy(t, d, s.pid, s.name, s.uid, s.date, s.mod, 2)
		dirs[s.uid] = d
	}
	send := func(aet, uid string) {
		if out, err := dcmtk("storescu", "-aet", aet, "-aec", "WARD", "+sd", w.host, w.port, dirs[uid]).CombinedOutput(); err != nil {
			t.Fatalf("storescu: %v\n%s", err, out)
		}
	}
	send("STORESCU", a1)
	send("STORESCU", a2)
	send("STORESCU", b1)
	send("OLDCT", b2)
	studies := func(keys ...string) string {
		args := append([]string{"-S", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"}, keys...)
		o, err := dcmtk("findscu", append(args, w.host, w.port)...).CombinedOutput()
		if err != nil {
			t.Fatalf("findscu: %v\n%s", err, o)
		}
		var uids []string
		for _, m := range paddedUIDRE.FindAllStringSubmatch(string(o), -1) {
			uids = append(uids, m[1])
		}
		sort.Strings(uids)
		return strings.Join(uids, " ")
	}
	if got := studies(); got != strings.Join([]string{a1, a2, b1, b2}, " ") {
		o, _ := dcmtk("findscu", "-S", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", w.host, w.port).CombinedOutput()
		t.Fatalf("stored: %s\n%s", got, o)
	}

	// The plan: A1 only. A2 is recent; B1 is an MR, kept 30 years; B2 is a
	// CT older than 10 years, but came from OLDCT, whose rule counts a day
	// from receipt: the longest period wins.
	o, code := wardCLI(t, "retention", "plan", "--data", w.dir)
	if code != 0 || !strings.Contains(o, "study "+a1+" date 20050101") || !strings.Contains(o, "rule ct-10y") || !strings.Contains(o, "1 study of 4 due") {
		t.Fatalf("plan: %d\n%q", code, o)
	}
	for _, x := range []string{a2, b1, b2, nameA, nameB, "ALPHA", "BRAVO"} {
		if strings.Contains(o, x) {
			t.Fatalf("the plan names %q:\n%s", x, o)
		}
	}
	// 1 of 4 is more than max_percent (10): refused unless forced.
	var out, errb bytes.Buffer
	if code := runCLI([]string{"retention", "run", "--yes", "--data", w.dir}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "max_percent") {
		t.Fatalf("run above max_percent: %d %s %s", code, out.String(), errb.String())
	}
	if got := studies(); got != strings.Join([]string{a1, a2, b1, b2}, " ") {
		t.Fatalf("a refused pass deleted: %s", got)
	}
	if o, code := wardCLI(t, "retention", "run", "--yes", "--force", "--data", w.dir); code != 0 || !strings.Contains(o, "deleted study "+a1+": 2 instances") {
		t.Fatalf("run: %d\n%s", code, o)
	}
	if got := studies(); got != strings.Join([]string{a2, b1, b2}, " ") {
		t.Fatalf("after the pass findscu finds %s", got)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "study-deleted", audit.OutcomeSuccess, a1) && hasEvent(r, "study-deleted", -1, `retention rule &#34;ct-10y&#34;`) && hasEvent(r, "study-deleted", -1, "ward retention")
	})

	// A backup holding patient B.
	bdir := filepath.Join(t.TempDir(), "backup")
	if o, code := wardCLI(t, "backup", bdir, "--data", w.dir); code != 0 {
		t.Fatalf("backup: %d %s", code, o)
	}
	if hits := grepTree(t, bdir, "", nameB); len(hits) == 0 {
		t.Fatal("the backup does not hold the patient's name before the erasure: the grep below would prove nothing")
	}

	// Erasure: a confirmation is asked for; without one nothing goes.
	out.Reset()
	errb.Reset()
	if code := runCLI([]string{"patient", "delete", pidB, "--reason", "request 2026-117", "--data", w.dir}, &out, &errb); code != 1 || !strings.Contains(out.String(), "patient "+pidB+": 2 studies, 2 series, 4 instances") {
		t.Fatalf("unconfirmed erasure: %d %s %s", code, out.String(), errb.String())
	}
	if got := studies("-k", "PatientID="+pidB); got != b1+" "+b2 {
		t.Fatalf("an unconfirmed erasure deleted: %q", got)
	}
	if o, code := wardCLI(t, "patient", "delete", pidB, "--reason", "request 2026-117", "--yes", "--data", w.dir); code != 0 || !strings.Contains(o, "erased patient "+pidB+": 2 studies, 4 instances") {
		t.Fatalf("erasure: %d\n%s", code, o)
	}
	if got := studies("-k", "PatientID="+pidB); got != "" {
		t.Fatalf("findscu still finds the patient's studies: %s", got)
	}
	if got := studies(); got != a2 {
		t.Fatalf("after the erasure findscu finds %s", got)
	}
	got := t.TempDir()
	if o, err := dcmtk("getscu", "-S", "-aec", "WARD", "-od", got, "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID="+pidB, w.host, w.port).CombinedOutput(); err != nil {
		t.Logf("getscu: %v\n%s", err, o)
	}
	if files, _ := filepath.Glob(filepath.Join(got, "*")); len(files) != 0 {
		t.Fatalf("getscu retrieved the erased patient's objects: %v", files)
	}
	recs := readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "study-deleted", audit.OutcomeSuccess, b1) && hasEvent(r, "study-deleted", audit.OutcomeSuccess, b2)
	})
	n := 0
	for _, r := range recs {
		if r.Event == "study-deleted" && strings.Contains(r.XML, pidB) {
			n++
			for _, want := range []string{"GDPR Art. 17", "request 2026-117", "ward patient delete", "@"} {
				if !strings.Contains(r.XML, want) {
					t.Errorf("the erasure's record lacks %q: %s", want, r.XML)
				}
			}
		}
		if strings.Contains(r.XML, nameB) || strings.Contains(r.XML, "BRAVO") {
			t.Errorf("an audit record names the patient: %s", r.XML)
		}
	}
	if n != 2 {
		t.Fatalf("%d Study Deleted records of the patient, want 2", n)
	}

	// Nothing of the patient left in the data directory (the audit trail
	// keeps the fact, by the patient ID) nor, after the next backup, in
	// the backup folder.
	audits := filepath.Join(w.dir, "audit")
	if hits := grepTree(t, w.dir, audits, nameB, pidB); len(hits) > 0 {
		t.Fatalf("the data directory still holds the patient, ward serving:\n%s", strings.Join(hits, "\n"))
	}
	if o, code := wardCLI(t, "backup", bdir, "--data", w.dir); code != 0 || !strings.Contains(o, "4 objects removed") {
		t.Fatalf("backup after the erasure: %d %s", code, o)
	}
	if hits := grepTree(t, bdir, "", nameB, pidB); len(hits) > 0 {
		t.Fatalf("the backup still holds the patient:\n%s", strings.Join(hits, "\n"))
	}
	w.stop()
	if hits := grepTree(t, w.dir, audits, nameB, pidB); len(hits) > 0 {
		t.Fatalf("the data directory still holds the patient, ward stopped:\n%s", strings.Join(hits, "\n"))
	}
	// The other patient is whole.
	if hits := grepTree(t, w.dir, audits, nameA); len(hits) == 0 {
		t.Fatal("the other patient's name is gone from the index too: the grep proves nothing")
	}

	// With ward serve stopped the commands open the data directory, with
	// the rules of its ward.toml. By receipt: A2's objects, received 60
	// days ago (set in the index while Ward is stopped), are due under a
	// 30-day rule; by study date they would not be (2024, no date rule).
	db, err := sql.Open("sqlite", filepath.Join(w.dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE instance SET received_at = ?`, time.Now().AddDate(0, 0, -60).UnixNano()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	toml := "[storage]\nmin_free = \"16MiB\"\n[[retention.rules]]\nname = \"recv-30d\"\nolder_than = \"30d\"\nby = \"received\"\nmodality = [\"CT\"]\n"
	if err := os.WriteFile(filepath.Join(w.dir, "ward.toml"), []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, code := wardCLI(t, "retention", "plan", "--data", w.dir); code != 0 || !strings.Contains(o, "study "+a2+" ") || !strings.Contains(o, "rule recv-30d") || !strings.Contains(o, "1 study of 1 due") {
		t.Fatalf("plan, stopped: %d\n%s", code, o)
	}
	if o, code := wardCLI(t, "retention", "run", "--yes", "--force", "--data", w.dir); code != 0 || !strings.Contains(o, "deleted 1 study") {
		t.Fatalf("run, stopped: %d\n%s", code, o)
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "study-deleted", audit.OutcomeSuccess, a2) && hasEvent(r, "study-deleted", -1, `retention rule &#34;recv-30d&#34;: older than 30d by receipt`)
	})
	out.Reset()
	errb.Reset()
	if code := runCLI([]string{"patient", "delete", pidA, "--reason", "r", "--yes", "--data", w.dir}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no study of patient") {
		t.Fatalf("erasure of a patient with nothing stored: %d %s %s", code, out.String(), errb.String())
	}
}
