package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
)

// craftedCT writes a small CT object in Explicit VR Little Endian with the
// given UIDs, as a sender that does not check them would.
func craftedCT(t *testing.T, path, sop, study, series string) {
	t.Helper()
	const ct = "1.2.840.10008.5.1.4.1.1.2"
	ds := &dicom.DataSet{}
	ds.Set(dicom.SOPClassUID, ct)
	ds.Set(dicom.SOPInstanceUID, sop)
	ds.Set(dicom.PatientID, "P1")
	ds.Set(dicom.StudyInstanceUID, study)
	ds.Set(dicom.SeriesInstanceUID, series)
	body, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	// The meta header names a valid instance UID (WriteFileHeader checks
	// it); storescu sends the data set's.
	writePart10(t, path, ct, "1.2.826.0.1.3680043.10.13.99", dicom.ExplicitVRLittleEndian.UID, body)
}

// writePart10 writes a Part 10 file whose meta header says ts, whatever
// body is in.
func writePart10(t *testing.T, path, class, inst, ts string, body []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := dicom.WriteFileHeader(&buf, &dicom.FileMeta{MediaStorageSOPClassUID: class, MediaStorageSOPInstanceUID: inst, TransferSyntaxUID: ts}); err != nil {
		t.Fatal(err)
	}
	buf.Write(body)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

var storescuStatus = regexp.MustCompile(`Status\s*:\s*0x([0-9A-Fa-f]{4})|\(0000,0900\) US (\d+)`)

// storescuOne sends one file with storescu and returns the status Ward
// answered (-1 when storescu sent nothing) and storescu's output.
func storescuOne(t *testing.T, w *ward, path string, extra ...string) (int, string) {
	t.Helper()
	args := []string{"-d", "-aec", "WARD", "-aet", "STORESCU"}
	for _, x := range extra {
		if x != "" {
			args = append(args, x)
		}
	}
	args = append(args, w.host, w.port, path)
	out, _ := dcmtk("storescu", args...).CombinedOutput()
	s := string(out)
	if !strings.Contains(s, "Received Store Response") {
		return -1, s
	}
	i := strings.Index(s, "Received Store Response")
	m := storescuStatus.FindStringSubmatch(s[i:])
	if m == nil {
		return -1, s
	}
	if m[1] != "" {
		v, _ := strconv.ParseUint(m[1], 16, 16)
		return int(v), s
	}
	v, _ := strconv.Atoi(m[2])
	return v, s
}

// TestStorescuBadUIDs: storescu sends objects whose UIDs could name a path
// or are no UIDs. Ward answers 0117 for a bad SOP Instance UID and C000 for
// a bad Study or Series Instance UID, stores none of them, and stores the
// good file and the one with a leading zero sent with them (issue 14,
// item 13).
func TestStorescuBadUIDs(t *testing.T) {
	requireTool(t, "storescu")
	w := startWard(t)
	dir := t.TempDir()
	const root = "1.2.826.0.1.3680043.10.13"
	cases := []struct {
		name, sop, study, series string
		status                   int
	}{
		{"good", root + ".1", root + ".100", root + ".100.1", 0x0000},
		{"leading zero", root + ".2", root + ".0100", root + ".0100.1", 0x0000},
		{"study with a slash", root + ".3", root + "/../../x", root + ".101.1", 0xC000},
		{"study dot-dot", root + ".4", "..", root + ".102.1", 0xC000},
		{"study of 65 characters", root + ".5", root + "." + strings.Repeat("7", 64-len(root)), root + ".103.1", 0xC000},
		{"series with a backslash", root + ".6", root + ".104", root + `.104\1`, 0xC000},
		{"sop instance dot-dot", "..", root + ".105", root + ".105.1", 0x0117},
		{"sop instance dot", ".", root + ".106", root + ".106.1", 0x0117},
		{"sop instance with a slash", root + "/7", root + ".107", root + ".107.1", 0x0117},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strconv.Itoa(i)+".dcm")
			craftedCT(t, p, c.sop, c.study, c.series)
			status, out := storescuOne(t, w, p)
			if status != c.status {
				t.Fatalf("status 0x%04X, want 0x%04X:\n%s", status, c.status, lastLines([]byte(out), 30))
			}
			if c.status != 0 && !strings.Contains(out, "ErrorComment") {
				t.Errorf("no error comment:\n%s", lastLines([]byte(out), 30))
			}
		})
	}
	n, err := w.srv.Index().CountInstances(t.Context())
	if err != nil || n != 2 {
		t.Fatalf("%d instances stored (%v), want the 2 good ones", n, err)
	}
}

// relabelled writes src's data set under a meta header that names ts,
// and returns its SOP Class and Instance UIDs.
func relabelled(t *testing.T, src, dst, ts string) (class, inst string) {
	t.Helper()
	meta, rc, err := dicom.OpenFile(src)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	writePart10(t, dst, meta.SOPClassUID, meta.SOPInstanceUID, ts, body.Bytes())
	return meta.SOPClassUID, meta.SOPInstanceUID
}

// TestPixelDataContradictsSyntax: native CT pixel data on a JPEG 2000
// context, and encapsulated JPEG pixel data on an Explicit VR Little
// Endian context, reach Ward from ward store, which sends a file's data
// set as it is on a context for the syntax its meta header names. Ward
// answers C000 naming Pixel Data and stores neither; before, both were
// stored with 0000 and labelled with the negotiated syntax (issue 14,
// item 18). storescu cannot be the sender here: DCMTK checks the same
// rule before sending (the test shows it refuses both files), so it
// sends only the correctly labelled originals, which Ward stores.
func TestPixelDataContradictsSyntax(t *testing.T) {
	requireTool(t, "storescu")
	requirePydicom(t)
	w := startWard(t)
	for _, c := range []struct {
		name, src, ts, flag string
	}{
		{"native on JPEG 2000", "CT_small.dcm", "1.2.840.10008.1.2.4.91", "-xw"},
		{"JPEG on explicit VR little endian", "JPEG-lossy.dcm", dicom.ExplicitVRLittleEndian.UID, "-xe"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, c.src)
			_, inst := relabelled(t, filepath.Join(pydicomTestFiles, c.src), p, c.ts)
			out, code := wardCLI(t, "store", "--quiet", "--aec", "WARD", w.addr, p)
			if code != 1 || !strings.Contains(out, "status 0xC000") || !strings.Contains(out, "Pixel Data:") {
				t.Fatalf("ward store: exit %d, want 1 with status 0xC000 naming Pixel Data:\n%s", code, out)
			}
			if _, err := w.srv.Index().Get(t.Context(), inst); err == nil {
				t.Fatalf("%s was stored", inst)
			}
			// DCMTK refuses to send the relabelled file at all.
			if status, out := storescuOne(t, w, p, c.flag, "-R"); status != -1 {
				t.Errorf("storescu sent it (status 0x%04X):\n%s", status, lastLines([]byte(out), 20))
			}
			// Correctly labelled, the object is stored.
			orig := filepath.Join(pydicomTestFiles, c.src)
			_, ts := sopInstanceOf(t, orig)
			if status, out := storescuOne(t, w, orig, storescuSyntaxFlag[ts], "-R"); status != 0 {
				t.Fatalf("the original: status 0x%04X:\n%s", status, lastLines([]byte(out), 40))
			}
		})
	}
}
