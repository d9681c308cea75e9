package interop

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
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
//
// Every association is audited as one DICOM Instances Transferred, a
// minor failure when its store was refused, whether by the archive or by
// the DIMSE dispatcher before it reached the archive.
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
			// Each association is one DICOM Instances Transferred: a
			// failure when its store was refused, by the archive (C000)
			// or by the dispatcher before the archive (0117) alike.
			recs := readAudit(t, w.dir, func(r []audit.Record) bool { return count(r, "instances-transferred") == i+1 })
			var last audit.Record
			for _, r := range recs {
				if r.Event == "instances-transferred" {
					last = r
				}
			}
			want := audit.OutcomeSuccess
			if c.status != 0 {
				want = audit.OutcomeMinorFailure
			}
			if last.Outcome != want || strings.Join(last.Peers, ",") != "STORESCU" {
				t.Errorf("instances transferred: outcome %d, want %d; peers %v\n%s", last.Outcome, want, last.Peers, last.XML)
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

// TestWardStoreAfterStorescpAborts: storescp aborts every association on
// its first C-STORE (--abort-after: once the request is in; --abort-during:
// while it arrives). ward store opens a new association after each abort
// and sends each of its 13 files at most twice: every file ends with its
// own failure and reason, none "not sent", and the exit status is 1
// (issue 14, item 17: before, 12 of the 13 were "not sent" after the
// first abort).
func TestWardStoreAfterStorescpAborts(t *testing.T) {
	for _, opt := range []string{"--abort-after", "--abort-during"} {
		t.Run(opt, func(t *testing.T) {
			port, _ := startStorescp(t, opt)
			dir := t.TempDir()
			const root = "1.2.826.0.1.3680043.10.17"
			for i := 1; i <= 13; i++ {
				craftedCT(t, filepath.Join(dir, strconv.Itoa(i)+".dcm"), root+"."+strconv.Itoa(i), root+".100", root+".100.1")
			}
			out, code := wardCLI(t, "store", "--quiet", "--aec", "STORESCP", "127.0.0.1:"+strconv.Itoa(port), dir)
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, out)
			}
			if !strings.Contains(out, "sent 0 of 13") || !strings.Contains(out, "failed (13): the association ended twice") || strings.Contains(out, "not sent") {
				t.Fatalf("each file should fail on its own after one retry:\n%s", out)
			}
		})
	}
}

// cuttingProxy forwards loopback connections to target, and cuts the
// first one (both ways, no A-ABORT) once the client has sent after bytes.
func cuttingProxy(t *testing.T, target string, after int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		first := true
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(c, u); c.Close() }()
			if first {
				first = false
				go func() { io.CopyN(u, c, after); c.Close(); u.Close() }()
				continue
			}
			go func() { io.Copy(u, c); u.Close() }()
		}
	}()
	return ln.Addr().String()
}

// TestWardStoreAfterConnectionCut: the connection to a storescp that
// works is cut in the middle of the third of 13 files. ward store opens a
// new association, sends that file again and the rest: storescp holds all
// 13, and the exit status is 0 (issue 14, item 17).
func TestWardStoreAfterConnectionCut(t *testing.T) {
	port, recv := startStorescp(t)
	dir := t.TempDir()
	const root = "1.2.826.0.1.3680043.10.17"
	for i := 1; i <= 13; i++ {
		craftedCT(t, filepath.Join(dir, fmt.Sprintf("%02d.dcm", i)), root+"."+strconv.Itoa(i), root+".100", root+".100.1")
	}
	addr := cuttingProxy(t, "127.0.0.1:"+strconv.Itoa(port), 1200)
	out, code := wardCLI(t, "store", "--quiet", "--aec", "STORESCP", addr, dir)
	if code != 0 || !strings.Contains(out, "sent 13 of 13") {
		t.Fatalf("exit %d, want 0 with every file sent:\n%s", code, out)
	}
	for i := 1; i <= 13; i++ {
		if m, _ := filepath.Glob(filepath.Join(recv, "*"+root+"."+strconv.Itoa(i))); len(m) != 1 {
			t.Errorf("file %d not received", i)
		}
	}
}
