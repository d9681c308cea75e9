package cluster

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/test/harness"
)

// TestStatelessNodes: what DCMTK's storescu stored through node A, node
// B finds and serves to DCMTK's findscu, getscu and movescu (to a
// storescp registered through node A), to Ward's own C-GET through
// HAProxy, and over DICOMweb (QIDO-RS, WADO-RS) with a token issued
// through node A, directly and through HAProxy's HTTP frontend.
func TestStatelessNodes(t *testing.T) {
	testci.RequireTool(t, "findscu", "getscu", "movescu", "storescp")
	c := newCluster(t, clusterOpts{})
	a, b := c.nodes[0], c.nodes[1]
	const prefix = "1.2.826.0.1.3680043.10.1432.18.1"
	study := prefix + ".0"
	objs := makeObjects(t, prefix, 20, "")
	args := []string{"-aet", scuAET, "-aec", "WARD", "127.0.0.1", strconv.Itoa(a.DICOMPort)}
	for _, o := range objs {
		args = append(args, o.path)
	}
	if out, ok := harness.RunDCMTK(t, "storescu", args...); !ok {
		t.Fatalf("storescu to node A failed:\n%s", out)
	}
	bPort := strconv.Itoa(b.DICOMPort)

	t.Run("C-FIND through B", func(t *testing.T) {
		out, ok := harness.RunDCMTK(t, "findscu", "-v", "-S", "-aet", scuAET, "-aec", "WARD",
			"-k", "QueryRetrieveLevel=IMAGE", "-k", "StudyInstanceUID="+study, "-k", "SOPInstanceUID", "127.0.0.1", bPort)
		if n := strings.Count(out, "(Pending)"); !ok || n != len(objs) {
			t.Fatalf("findscu through node B: %d matches (ok %v), want %d:\n%s", n, ok, len(objs), out)
		}
	})

	t.Run("C-GET through B", func(t *testing.T) {
		dir := t.TempDir()
		out, ok := harness.RunDCMTK(t, "getscu", "-S", "-aet", scuAET, "-aec", "WARD", "-od", dir,
			"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, "127.0.0.1", bPort)
		if !ok {
			t.Fatalf("getscu through node B failed:\n%s", out)
		}
		checkFiles(t, dir, objs)
	})

	t.Run("C-MOVE through B", func(t *testing.T) {
		port, dir := harness.StartStorescp(t)
		a.CLI(t, "", "peer", "add", "STORESCP", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--allow", "move-destination")
		// The registration reaches node B within seconds (LISTEN/NOTIFY
		// or its poll): until then B does not know the destination.
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, ok := harness.RunDCMTK(t, "movescu", "-S", "-aet", scuAET, "-aec", "WARD", "-aem", "STORESCP",
				"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, "127.0.0.1", bPort)
			if ok && !strings.Contains(out, "Move Destination Unknown") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("movescu through node B to a destination registered through node A:\n%s", out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		checkFiles(t, dir, objs)
	})

	t.Run("Ward's C-GET through HAProxy", func(t *testing.T) {
		checkRetrieved(t, c.lbAddr(), study, objs)
	})

	t.Run("DICOMweb through B and HAProxy", func(t *testing.T) {
		tok := c.webToken(t)
		lbWeb := "http://127.0.0.1:" + strconv.Itoa(c.lb.HTTPPort)
		for _, base := range []string{b.WebURL(""), lbWeb} {
			// The token, issued through node A, reaches every node within
			// seconds.
			var code int
			var body []byte
			deadline := time.Now().Add(20 * time.Second)
			for {
				code, body = httpGet(t, base+"/dicom-web/studies/"+study+"/instances", tok, "application/dicom+json")
				if code == 200 || time.Now().After(deadline) {
					break
				}
				time.Sleep(300 * time.Millisecond)
			}
			if code != 200 {
				t.Fatalf("QIDO-RS through %s: %d %s", base, code, body)
			}
			var matches []map[string]any
			if err := json.Unmarshal(body, &matches); err != nil || len(matches) != len(objs) {
				t.Fatalf("QIDO-RS through %s: %d matches (%v), want %d", base, len(matches), err, len(objs))
			}
			o := objs[3]
			series := prefix + ".0.1"
			code, body = httpGet(t, base+"/dicom-web/studies/"+study+"/series/"+series+"/instances/"+o.uid, tok,
				`multipart/related; type="application/dicom"`)
			if code != 200 || !bytes.Contains(body, o.dataSet) {
				t.Fatalf("WADO-RS of %s through %s: %d, %d bytes, data set sent in it: %v", o.uid, base, code, len(body), bytes.Contains(body, o.dataSet))
			}
		}
	})
}

// checkFiles checks that dir holds one Part 10 file per object of want,
// each with the data set sent (byte for byte, or equal by pydicom's
// reading where DCMTK wrote it otherwise).
func checkFiles(t *testing.T, dir string, want []*object) {
	t.Helper()
	byUID := map[string]*object{}
	for _, o := range want {
		byUID[o.uid] = o
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		meta, rc, err := dicom.OpenFile(p)
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		o := byUID[meta.MediaStorageSOPInstanceUID]
		if o == nil {
			t.Errorf("%s: unexpected object %s", e.Name(), meta.MediaStorageSOPInstanceUID)
			continue
		}
		seen[o.uid] = true
		if !bytes.Equal(b, o.dataSet) {
			if ok, why := harness.DatasetsEqual(t, o.path, p); !ok {
				t.Errorf("%s differs from what was stored: %s", o.uid, why)
			}
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d of %d objects received in %s", len(seen), len(want), dir)
	}
}
