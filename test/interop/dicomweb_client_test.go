package interop

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
)

// npm dicomweb-client (OHIF's own DICOMweb library) under Node (20 here;
// Debian 12's 18 is enough) with xhr2: test/interop/node holds its pinned install (package-lock.json;
// `npm ci` there, which scripts/test.sh runs) and the script that drives
// Ward with it.

// nodeDir is test/interop/node.
func nodeDir() string { return filepath.Join(repoRoot(), "test", "interop", "node") }

// requireDicomwebClient skips (fails under CI=true) without Node 18+ or
// without the npm install in test/interop/node.
func requireDicomwebClient(t *testing.T) {
	t.Helper()
	requireTool(t, "node")
	out, err := exec.Command("node", "-p", "process.versions.node.split('.')[0]").Output()
	if major, _ := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || major < 18 {
		if ci() {
			t.Fatalf("node %s: Node 18 or later needed (required under CI=true)", out)
		}
		t.Skipf("node %s: Node 18 or later needed", out)
	}
	if _, err := os.Stat(filepath.Join(nodeDir(), "node_modules", "dicomweb-client", "package.json")); err != nil {
		if ci() {
			t.Fatal("dicomweb-client not installed: run npm ci in test/interop/node (required under CI=true)")
		}
		t.Skip("dicomweb-client not installed: run npm ci in test/interop/node")
	}
}

// clientRun is what dicomweb.js prints.
type clientRun struct {
	Store        *string                             `json:"store"`
	StoreError   string                              `json:"storeError"`
	Studies      []struct{ Study, PatientID string } `json:"studies"`
	StudiesError string                              `json:"studiesError"`
	Series       []struct{ Series, Modality string } `json:"series"`
	SeriesError  string                              `json:"seriesError"`
	Instances    []struct {
		SOP      string `json:"sop"`
		SOPClass string `json:"sopClass"`
	} `json:"instances"`
	InstancesError string `json:"instancesError"`
	Metadata       []struct {
		SOP       string   `json:"sop"`
		Rows      int      `json:"rows"`
		Columns   int      `json:"columns"`
		PixelData []string `json:"pixelData"`
	} `json:"metadata"`
	MetadataError string   `json:"metadataError"`
	Frames        []string `json:"frames"`
	FramesError   string   `json:"framesError"`
}

// runDicomwebClient runs dicomweb.js against Ward with token and file.
func runDicomwebClient(t *testing.T, w *webWard, token, file string) *clientRun {
	t.Helper()
	cmd := exec.Command("node", "dicomweb.js", strings.TrimSuffix(w.dicomweb(), "/"), file)
	cmd.Dir = nodeDir()
	cmd.Env = append(os.Environ(), "WARD_TOKEN="+token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("node dicomweb.js: %v\n%s%s", err, out.String(), errb.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("node dicomweb.js did not finish in 2 minutes\n%s", errb.String())
	}
	var r clientRun
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("dicomweb.js printed %q: %v\n%s", out.String(), err, errb.String())
	}
	t.Logf("dicomweb-client: %s", out.String())
	return &r
}

// pixelDataOf is a native file's Pixel Data, read by pydicom.
func pixelDataOf(t *testing.T, path string) []byte {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import sys, pydicom; sys.stdout.buffer.write(pydicom.dcmread(sys.argv[1]).PixelData)", path).Output()
	if err != nil {
		t.Fatalf("pydicom: %v", err)
	}
	return out
}

// TestDicomwebClient: dicomweb-client stores a CT with STOW-RS, finds its
// study, series and instance with QIDO-RS, reads the series metadata
// (rows and columns, Pixel Data as a BulkDataURI) and the first frame,
// which holds the file's pixels byte for byte; the requests are audited
// with the token's user. Without a token every call fails.
func TestDicomwebClient(t *testing.T) {
	requireDicomwebClient(t)
	requirePydicom(t)
	w := startWebWard(t, "lockout_after = -1\n", nil)
	w.user(t, "ohif", "uploader")
	tok := w.token(t, "ohif", "write")
	ct := filepath.Join(pydicomTestFiles, "CT_small.dcm")
	study, series, sop := uidsOfFile(t, ct)

	r := runDicomwebClient(t, w, tok, ct)
	if r.StoreError != "" {
		t.Errorf("storeInstances: %s", r.StoreError)
	}
	if r.StudiesError != "" || len(r.Studies) != 1 || r.Studies[0].Study != study || r.Studies[0].PatientID != "1CT1" {
		t.Errorf("searchForStudies: %+v %s", r.Studies, r.StudiesError)
	}
	if r.SeriesError != "" || len(r.Series) != 1 || r.Series[0].Series != series || r.Series[0].Modality != "CT" {
		t.Errorf("searchForSeries: %+v %s", r.Series, r.SeriesError)
	}
	if r.InstancesError != "" || len(r.Instances) != 1 || r.Instances[0].SOP != sop || r.Instances[0].SOPClass != "1.2.840.10008.5.1.4.1.1.2" {
		t.Errorf("searchForInstances: %+v %s", r.Instances, r.InstancesError)
	}
	if r.MetadataError != "" || len(r.Metadata) != 1 || r.Metadata[0].SOP != sop || r.Metadata[0].Rows != 128 || r.Metadata[0].Columns != 128 ||
		strings.Join(r.Metadata[0].PixelData, ",") != "BulkDataURI" {
		t.Errorf("retrieveSeriesMetadata: %+v %s", r.Metadata, r.MetadataError)
	}
	if r.FramesError != "" || len(r.Frames) != 1 {
		t.Errorf("retrieveInstanceFrames: %d frames %s", len(r.Frames), r.FramesError)
	} else if f, _ := base64.StdEncoding.DecodeString(r.Frames[0]); !bytes.Equal(f, pixelDataOf(t, ct)) {
		t.Errorf("frame 1: %d bytes, not the file's %d bytes of pixels", len(f), len(pixelDataOf(t, ct)))
	}
	readAudit(t, w.dir, func(recs []audit.Record) bool {
		var stored, queried, sent bool
		for _, x := range recs {
			switch {
			case x.Event == "instances-transferred" && hasPeer(x, "ohif") && strings.Contains(x.XML, `EventActionCode="C"`):
				stored = true
			case x.Event == "query" && hasPeer(x, "ohif"):
				queried = true
			case (x.Event == "instances-transferred" || x.Event == "instances-accessed") && hasPeer(x, "ohif") && strings.Contains(x.XML, `EventActionCode="R"`):
				sent = true
			}
		}
		return stored && queried && sent
	})

	// Without a token nothing works.
	r = runDicomwebClient(t, w, "", ct)
	if r.StoreError != "401" || r.StudiesError != "401" || r.MetadataError == "" || r.FramesError == "" {
		t.Errorf("dicomweb-client without a token: %+v", r)
	}
}
