package interop

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
)

// deflatedFile is pydicom's Deflated Explicit VR Little Endian test file,
// whose deflated stream has an odd length (4303 bytes).
func deflatedFile(t *testing.T) (path, uid string) {
	t.Helper()
	requirePydicom(t)
	path = filepath.Join(pydicomTestFiles, "image_dfl.dcm")
	uid, ts := sopInstanceOf(t, path)
	if ts != dicom.DeflatedExplicitVRLittleEndian.UID || uid == "" {
		t.Fatalf("%s: transfer syntax %q, SOP instance %q", path, ts, uid)
	}
	return path, uid
}

// receivedAs checks that one file of dir holds uid, in transfer syntax ts,
// with the data set of src.
func receivedAs(t *testing.T, dir, uid, ts, src string) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(dir, "*"+uid))
	if len(matches) != 1 {
		t.Fatalf("%s not received (%v)", uid, matches)
	}
	meta, rc, err := dicom.OpenFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if meta.TransferSyntaxUID != ts {
		t.Errorf("received in %s, want %s", meta.TransferSyntaxUID, ts)
	}
	if ok, diff := datasetsEqual(t, src, matches[0]); !ok {
		t.Errorf("received differently:\n%s", diff)
	}
}

// TestRegressionWardStoreDeflatedOddLength: `ward store` of a deflated file
// whose stream has an odd length. storescp accepting deflate aborted with
// "DIMSE: Odd Fragment Length" (issue 14, item 16): the stream is now
// padded to even length, and storescp (deflate accepted, then not) and
// Orthanc receive the same data set.
func TestRegressionWardStoreDeflatedOddLength(t *testing.T) {
	src, uid := deflatedFile(t)
	t.Run("storescp-deflate", func(t *testing.T) {
		port, recv := startStorescp(t, "+xd")
		if rc := runWard(t, "store", "--quiet", "--aec", "STORESCP", "127.0.0.1:"+strconv.Itoa(port), src); rc != 0 {
			t.Fatalf("ward store exit %d", rc)
		}
		receivedAs(t, recv, uid, dicom.DeflatedExplicitVRLittleEndian.UID, src)
	})
	t.Run("storescp-no-deflate", func(t *testing.T) {
		// The default storescp does not accept deflate: the object is
		// inflated to Explicit VR Little Endian, as storescu does.
		port, recv := startStorescp(t)
		if rc := runWard(t, "store", "--quiet", "--aec", "STORESCP", "127.0.0.1:"+strconv.Itoa(port), src); rc != 0 {
			t.Fatalf("ward store exit %d", rc)
		}
		receivedAs(t, recv, uid, dicom.ExplicitVRLittleEndian.UID, src)
	})
	t.Run("orthanc", func(t *testing.T) {
		o := startOrthanc(t)
		if rc := runWard(t, "store", "--quiet", "--aec", "ORTHANC", "--aet", "WARD", "127.0.0.1:"+strconv.Itoa(o.DICOMPort), src); rc != 0 {
			t.Fatalf("ward store exit %d", rc)
		}
		var ids []string
		o.GetJSON(t, "/instances", &ids)
		if len(ids) != 1 {
			t.Fatalf("Orthanc holds %d instances, want 1", len(ids))
		}
		p := filepath.Join(t.TempDir(), "o.dcm")
		if err := os.WriteFile(p, o.Get(t, "/instances/"+ids[0]+"/file"), 0o600); err != nil {
			t.Fatal(err)
		}
		if ok, diff := datasetsEqual(t, src, p); !ok {
			t.Errorf("Orthanc's copy differs:\n%s", diff)
		}
	})
}

// TestRetrieveDeflated: the same object stored in Ward
// as received (deflated), then sent by Ward's SCP: a C-MOVE to a storescp
// that accepts deflate, and a C-GET by getscu that does.
func TestRetrieveDeflated(t *testing.T) {
	requireTool(t, "storescu", "movescu", "getscu")
	src, uid := deflatedFile(t)
	sport, sdir := startStorescp(t, "+xd")
	w := startWard(t, func(c *config.Config) {
		c.Peers = []config.Peer{{AETitle: "STORESCP", Host: "127.0.0.1", Port: sport, Allow: []string{config.MoveDestination}}}
	})
	if out, err := dcmtk("storescu", "-xd", "-aec", "WARD", w.host, w.port, src).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	if ok, diff := datasetsEqual(t, src, w.storedCopy(t, uid)); !ok {
		t.Fatalf("stored differently:\n%s", diff)
	}
	out, err := dcmtk("movescu", "-v", "-S", "-aec", "WARD", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID="+uid, w.host, w.port).CombinedOutput()
	if err != nil || strings.Contains(string(out), "E: ") {
		t.Fatalf("movescu: %v\n%s", err, out)
	}
	receivedAs(t, sdir, uid, dicom.DeflatedExplicitVRLittleEndian.UID, src)
	dir := t.TempDir()
	out, err = dcmtk("getscu", "-v", "-S", "+xd", "-aec", "WARD", "-od", dir, "-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID="+uid, w.host, w.port).CombinedOutput()
	if err != nil || strings.Contains(string(out), "E: ") {
		t.Fatalf("getscu: %v\n%s", err, out)
	}
	receivedAs(t, dir, uid, dicom.DeflatedExplicitVRLittleEndian.UID, src)
}
