package interop

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/cli"
)

// storescuSyntaxFlag is the storescu option that proposes a file's
// transfer syntax (storescu proposes only uncompressed ones by default).
var storescuSyntaxFlag = map[string]string{
	"1.2.840.10008.1.2.2":     "-xb",
	"1.2.840.10008.1.2.1.99":  "-xd",
	"1.2.840.10008.1.2.4.50":  "-xy",
	"1.2.840.10008.1.2.4.51":  "-xx",
	"1.2.840.10008.1.2.4.57":  "-xs",
	"1.2.840.10008.1.2.4.70":  "-xs",
	"1.2.840.10008.1.2.4.80":  "-xt",
	"1.2.840.10008.1.2.4.81":  "-xu",
	"1.2.840.10008.1.2.4.90":  "-xv",
	"1.2.840.10008.1.2.4.91":  "-xw",
	"1.2.840.10008.1.2.5":     "-xr",
	"1.2.840.10008.1.2.4.100": "-xm",
	"1.2.840.10008.1.2.4.102": "-xn",
}

// sopInstanceOf reads the SOP Instance UID a sender takes from the data set.
func sopInstanceOf(t *testing.T, path string) (uid, ts string) {
	t.Helper()
	meta, rc, err := dicom.OpenFile(path)
	if err != nil {
		return "", ""
	}
	defer rc.Close()
	tsx := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
	if tsx == nil {
		return "", ""
	}
	a, err := dicom.Scan(rc, tsx, func(tg dicom.Tag) bool { return tg == dicom.SOPInstanceUID }, 1024)
	if err != nil {
		return meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID
	}
	return a.String(dicom.SOPInstanceUID), meta.TransferSyntaxUID
}

// storedCopy writes Ward's stored object for uid to a temporary file.
func (w *ward) storedCopy(t *testing.T, uid string) string {
	t.Helper()
	ctx := context.Background()
	in, err := w.srv.Index().Get(ctx, uid)
	if err != nil {
		t.Fatalf("instance %s not in the index: %v", uid, err)
	}
	rc, err := w.srv.Blobs().Open(ctx, in.BlobKey)
	if err != nil {
		t.Fatalf("blob of %s: %v", uid, err)
	}
	defer rc.Close()
	p := filepath.Join(t.TempDir(), "stored.dcm")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEchoscu(t *testing.T) {
	requireTool(t, "echoscu")
	w := startWard(t)
	if out, err := dcmtk("echoscu", "-v", "-aec", "WARD", "-aet", "ANYONE", w.host, w.port).CombinedOutput(); err != nil {
		t.Fatalf("echoscu: %v\n%s", err, out)
	}
	out, err := dcmtk("echoscu", "-v", "-aec", "NOTWARD", w.host, w.port).CombinedOutput()
	if err == nil {
		t.Fatalf("echoscu to a wrong called AE title succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "Called AE Title Not Recognized") {
		t.Fatalf("wrong called AE: want 'Called AE Title Not Recognized', got:\n%s", out)
	}
}

// TestStorescuPydicomFiles sends every file of pydicom's test set that
// storescu can send, each in its own transfer syntax, and checks that Ward
// stored a data set equal to the one sent and indexed it.
func TestStorescuPydicomFiles(t *testing.T) {
	requireTool(t, "storescu")
	requirePydicom(t)
	w := startWard(t)
	files, _ := filepath.Glob(filepath.Join(pydicomTestFiles, "*.dcm"))
	if len(files) < 50 {
		t.Fatalf("only %d test files in %s", len(files), pydicomTestFiles)
	}
	stored, notSendable := 0, 0
	syntaxes := map[string]int{}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			uid, ts := sopInstanceOf(t, f)
			args := []string{"-v", "-R", "-aec", "WARD", "-aet", "STORESCU"}
			if x := storescuSyntaxFlag[ts]; x != "" {
				args = append(args, x)
			}
			args = append(args, w.host, w.port, f)
			out, err := dcmtk("storescu", args...).CombinedOutput()
			sent := strings.Contains(string(out), "Sending Store Request")
			if !sent {
				// storescu refused the file itself (no SOP instance, truncated
				// or not parseable): nothing reached Ward.
				notSendable++
				t.Logf("storescu cannot send it: %s", lastLines(out, 2))
				return
			}
			if err != nil || !strings.Contains(string(out), "Received Store Response (Success)") {
				t.Fatalf("storescu: %v\n%s", err, out)
			}
			stored++
			syntaxes[ts]++
			copyPath := w.storedCopy(t, uid)
			if ok, diff := datasetsEqual(t, f, copyPath); !ok {
				t.Fatalf("stored data set differs from the one sent:\n%s", diff)
			}
			meta, rc, err := dicom.OpenFile(copyPath)
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
			if meta.SourceApplicationEntityTitle != "STORESCU" {
				t.Errorf("source AE title in the stored file: %q", meta.SourceApplicationEntityTitle)
			}
			raw, _ := os.ReadFile(copyPath)
			for i := 0; i < 128; i++ {
				if raw[i] != 0 {
					t.Fatalf("preamble byte %d is %#x, want zero", i, raw[i])
				}
			}
		})
	}
	t.Logf("stored %d files in %d transfer syntaxes; %d files storescu cannot send", stored, len(syntaxes), notSendable)
	if stored < 50 || len(syntaxes) < 10 {
		t.Fatalf("too few files stored (%d) or syntaxes exercised (%d)", stored, len(syntaxes))
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// copyUncompressed copies the uncompressed test files with meta into a
// folder tree, for +sd and ward store.
func copyUncompressed(t *testing.T) (dir string, uids map[string]string) {
	t.Helper()
	dir = t.TempDir()
	uids = map[string]string{}
	files, _ := filepath.Glob(filepath.Join(pydicomTestFiles, "*.dcm"))
	charsets, _ := filepath.Glob(filepath.Join(pydicomTestFiles, "..", "charset_files", "*.dcm"))
	files = append(files, charsets...)
	for i, f := range files {
		meta, rc, err := dicom.OpenFile(f)
		if err != nil || meta.NoMeta {
			continue
		}
		rc.Close()
		ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
		if ts == nil || !dicom.IsUncompressed(ts) || ts.Deflated {
			continue
		}
		uid, _ := sopInstanceOf(t, f)
		if uid == "" || uid != meta.MediaStorageSOPInstanceUID {
			continue
		}
		if _, dup := uids[uid]; dup {
			continue
		}
		sub := filepath.Join(dir, "sub"+strconv.Itoa(i%3))
		os.MkdirAll(sub, 0o755)
		dst := filepath.Join(sub, filepath.Base(f))
		b, _ := os.ReadFile(f)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		// Only files storescu itself can read and send.
		if err := dcmtk("dcmdump", "-q", dst).Run(); err != nil {
			os.Remove(dst)
			continue
		}
		uids[uid] = dst
	}
	if len(uids) < 15 {
		t.Fatalf("only %d usable files", len(uids))
	}
	return dir, uids
}

func TestStorescuFolder(t *testing.T) {
	requireTool(t, "storescu", "dcmdump")
	requirePydicom(t)
	w := startWard(t)
	dir, uids := copyUncompressed(t)
	out, err := dcmtk("storescu", "-v", "-R", "-aec", "WARD", "+sd", "+r", w.host, w.port, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("storescu +sd: %v\n%s", err, out)
	}
	n, err := w.srv.Index().CountInstances(context.Background())
	if err != nil || n != int64(len(uids)) {
		t.Fatalf("stored %d instances (%v), sent %d", n, err, len(uids))
	}
	for uid, src := range uids {
		if ok, diff := datasetsEqual(t, src, w.storedCopy(t, uid)); !ok {
			t.Errorf("%s: %s", filepath.Base(src), diff)
		}
	}
}

// runWard runs the ward command in-process and returns its exit status.
func runWard(t *testing.T, args ...string) int {
	t.Helper()
	return cli.Main(args)
}

func TestWardStoreIntoStorescp(t *testing.T) {
	requirePydicom(t)
	requireTool(t, "dcmdump")
	port, recv := startStorescp(t)
	dir, uids := copyUncompressed(t)
	if rc := runWard(t, "store", "--quiet", "--aec", "STORESCP", "--parallel", "2", "127.0.0.1:"+strconv.Itoa(port), dir); rc != 0 {
		t.Fatalf("ward store exit %d", rc)
	}
	got := 0
	for uid, src := range uids {
		matches, _ := filepath.Glob(filepath.Join(recv, "*"+uid))
		if len(matches) != 1 {
			t.Errorf("%s (%s) not received by storescp", filepath.Base(src), uid)
			continue
		}
		got++
		if ok, diff := datasetsEqual(t, src, matches[0]); !ok {
			t.Errorf("%s received differently:\n%s", filepath.Base(src), diff)
		}
	}
	t.Logf("storescp received %d of %d", got, len(uids))
}

func TestWardStoreIntoOrthanc(t *testing.T) {
	requirePydicom(t)
	requireTool(t, "dcmdump")
	o := startOrthanc(t)
	dir, uids := copyUncompressed(t)
	if rc := runWard(t, "store", "--quiet", "--aec", "ORTHANC", "--aet", "WARD", "--parallel", "2", "127.0.0.1:"+strconv.Itoa(o.DICOMPort), dir); rc != 0 {
		t.Fatalf("ward store exit %d", rc)
	}
	var stats struct{ CountInstances int }
	o.GetJSON(t, "/statistics", &stats)
	if stats.CountInstances != len(uids) {
		t.Fatalf("Orthanc holds %d instances, sent %d", stats.CountInstances, len(uids))
	}
	var ids []string
	o.GetJSON(t, "/instances", &ids)
	byUID := map[string]string{}
	for _, id := range ids {
		var tags map[string]any
		o.GetJSON(t, "/instances/"+id+"/simplified-tags", &tags)
		uid, _ := tags["SOPInstanceUID"].(string)
		byUID[uid] = id
	}
	for uid, src := range uids {
		id, ok := byUID[uid]
		if !ok {
			t.Errorf("%s not in Orthanc", filepath.Base(src))
			continue
		}
		p := filepath.Join(t.TempDir(), "o.dcm")
		os.WriteFile(p, o.Get(t, "/instances/"+id+"/file"), 0o644)
		if ok, diff := datasetsEqual(t, src, p); !ok {
			t.Errorf("%s differs in Orthanc:\n%s", filepath.Base(src), diff)
		}
	}
}

func TestWardStoreIntoWard(t *testing.T) {
	requirePydicom(t)
	requireTool(t, "dcmdump")
	w := startWard(t)
	dir, uids := copyUncompressed(t)
	if rc := runWard(t, "store", "--quiet", "--aec", "WARD", "--parallel", "4", w.addr, dir); rc != 0 {
		t.Fatalf("ward store exit %d", rc)
	}
	for uid, src := range uids {
		if ok, diff := datasetsEqual(t, src, w.storedCopy(t, uid)); !ok {
			t.Errorf("%s: %s", filepath.Base(src), diff)
		}
	}
	// A wrong called AE title: every object fails, with the reason, exit 1.
	if rc := runWard(t, "store", "--quiet", "--aec", "NOTWARD", w.addr, dir); rc != 1 {
		t.Fatalf("ward store to a wrong AE title: exit %d, want 1", rc)
	}
}

// TestWardStoreConvertsForPeer sends files in explicit VR (little and big
// endian) and deflated to a storescp that accepts Implicit VR Little Endian
// only: ward store converts them, and the values arrive intact. A JPEG file
// cannot be converted: it fails with the reason, and the exit status is 1.
func TestWardStoreConvertsForPeer(t *testing.T) {
	requirePydicom(t)
	port, recv := startStorescp(t, "+xi")
	dir := t.TempDir()
	sources := map[string]string{} // SOP Instance UID -> source
	for _, f := range []string{"MR_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "rtplan.dcm", "CT_small.dcm"} {
		src := filepath.Join(pydicomTestFiles, f)
		uid, _ := sopInstanceOf(t, src)
		if _, dup := sources[uid]; dup {
			continue
		}
		b, _ := os.ReadFile(src)
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
		sources[uid] = src
	}
	if rc := runWard(t, "store", "--quiet", "--aec", "STORESCP", "127.0.0.1:"+strconv.Itoa(port), dir); rc != 0 {
		t.Fatalf("ward store exit %d", rc)
	}
	for uid, src := range sources {
		matches, _ := filepath.Glob(filepath.Join(recv, "*"+uid))
		if len(matches) != 1 {
			t.Errorf("%s not received", filepath.Base(src))
			continue
		}
		meta, rc, err := dicom.OpenFile(matches[0])
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if meta.TransferSyntaxUID != dicom.ImplicitVRLittleEndian.UID {
			t.Errorf("%s received in %s", filepath.Base(src), meta.TransferSyntaxUID)
		}
		if ok, diff := datasetsEqual(t, src, matches[0]); !ok {
			t.Errorf("%s converted with a difference:\n%s", filepath.Base(src), diff)
		}
	}
	// An object whose conversion fails (an SQ tag sent with VR LO, which
	// implicit VR would read as items) fails alone, before any of it is
	// sent; the association goes on with the others.
	mixed := t.TempDir()
	writeExplicitCT(t, filepath.Join(mixed, "0-unconvertible.dcm"), "1.2.826.0.1.3680043.8.498.777", "1.2.826.0.1.3680043.8.498.1", true)
	for _, f := range []string{"CT_small.dcm", "MR_small.dcm"} {
		b, _ := os.ReadFile(filepath.Join(pydicomTestFiles, f))
		os.WriteFile(filepath.Join(mixed, f), b, 0o644)
	}
	old, _ := filepath.Glob(filepath.Join(recv, "*"))
	for _, f := range old {
		os.Remove(f)
	}
	if rc := runWard(t, "store", "--quiet", "--aec", "STORESCP", "127.0.0.1:"+strconv.Itoa(port), mixed); rc != 1 {
		t.Fatalf("an unconvertible object among convertible ones: exit %d, want 1", rc)
	}
	if m, _ := filepath.Glob(filepath.Join(recv, "*1.2.826.0.1.3680043.8.498.777")); len(m) != 0 {
		t.Errorf("the unconvertible object arrived: %v", m)
	}
	if got, _ := filepath.Glob(filepath.Join(recv, "*")); len(got) != 2 {
		t.Errorf("%d objects arrived, want the 2 convertible ones", len(got))
	}

	jpeg := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(pydicomTestFiles, "JPEG-lossy.dcm"))
	os.WriteFile(filepath.Join(jpeg, "JPEG-lossy.dcm"), b, 0o644)
	if rc := runWard(t, "store", "--quiet", "--aec", "STORESCP", "127.0.0.1:"+strconv.Itoa(port), jpeg); rc != 1 {
		t.Fatalf("a JPEG file to an implicit-only peer: exit %d, want 1", rc)
	}
}

// writeExplicitCT writes a small CT object in Explicit VR Little Endian in
// study. If bad, it holds Referenced Image Sequence with VR LO: readable as
// it is, but not convertible to implicit VR, which reads that tag as a
// sequence.
func writeExplicitCT(t *testing.T, path, uid, study string, bad bool) {
	t.Helper()
	const ct = "1.2.840.10008.5.1.4.1.1.2"
	ds := &dicom.DataSet{}
	ds.Set(dicom.SOPClassUID, ct)
	ds.Set(dicom.SOPInstanceUID, uid)
	if bad {
		ds.Put(&dicom.Element{Tag: dicom.NewTag(0x0008, 0x1140), VR: "LO", Value: []byte("00000000")})
	}
	ds.Set(dicom.PatientID, "P1")
	ds.Set(dicom.StudyInstanceUID, study)
	ds.Set(dicom.SeriesInstanceUID, study+".1")
	body, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	meta := &dicom.FileMeta{MediaStorageSOPClassUID: ct, MediaStorageSOPInstanceUID: uid, TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID}
	if err := dicom.WriteFileHeader(&buf, meta); err != nil {
		t.Fatal(err)
	}
	buf.Write(body)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
