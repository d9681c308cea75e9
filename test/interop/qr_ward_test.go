package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
)

// TestWardServeQRWiring: a full `ward serve` (archive and index) answers
// findscu, movescu (to a registered peer with move-destination) and getscu;
// C-MOVE to an unknown peer, and to a registered peer without the
// move-destination permission, is refused with A801 and sends nothing.
func TestWardServeQRWiring(t *testing.T) {
	requireTool(t, "findscu", "movescu", "getscu", "storescu")
	requirePydicom(t)
	sport, sdir := startStorescp(t)
	mport, mdir := startStorescp(t)
	w := startWard(t, func(c *config.Config) {
		c.Peers = []config.Peer{
			{AETitle: "STORESCP", Host: "127.0.0.1", Port: sport, Allow: []string{config.MoveDestination}},
			{AETitle: "MODALITY", Host: "127.0.0.1", Port: mport, Allow: []string{"echo", "store"}},
		}
	})
	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	var files []string
	for _, p := range originals {
		files = append(files, p)
	}
	if out, err := dcmtk("storescu", append([]string{"-aec", "WARD", w.host, w.port}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	out, err := dcmtk("findscu", "-v", "-S", "-aec", "WARD", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P2", "-k", "StudyInstanceUID", w.host, w.port).CombinedOutput()
	if err != nil || len(pendingRE.FindAllString(string(out), -1)) != 2 {
		t.Fatalf("findscu: %v\n%s", err, out)
	}
	out, err = dcmtk("movescu", "-v", "-P", "-aec", "WARD", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P2", w.host, w.port).CombinedOutput()
	if err != nil || strings.Contains(string(out), "E: ") {
		t.Fatalf("movescu: %v\n%s", err, out)
	}
	compareReceived(t, sdir, originals, uidsOf(a, "P2"))
	out, _ = dcmtk("movescu", "-v", "-P", "-aec", "WARD", "-aem", "UNKNOWN", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P2", w.host, w.port).CombinedOutput()
	if !strings.Contains(string(out), "MoveDestinationUnknown") {
		t.Fatalf("movescu to an unregistered destination:\n%s", out)
	}
	out, _ = dcmtk("movescu", "-v", "-P", "-aec", "WARD", "-aem", "MODALITY", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P2", w.host, w.port).CombinedOutput()
	if !strings.Contains(string(out), "MoveDestinationUnknown") {
		t.Fatalf("movescu to a peer without move-destination:\n%s", out)
	}
	if got, err := os.ReadDir(mdir); err != nil || len(got) != 0 {
		t.Fatalf("a peer without move-destination received %d objects (%v)", len(got), err)
	}
	if !strings.Contains(w.log.String(), "no move-destination permission") {
		t.Fatalf("the refusal's reason is not in Ward's log:\n%s", w.log.String())
	}
	readAudit(t, w.dir, func(r []audit.Record) bool {
		return hasEvent(r, "security-alert", -1, "retrieve to MODALITY refused") && hasEvent(r, "security-alert", -1, "no move-destination permission")
	})
	dir := t.TempDir()
	out, err = dcmtk("getscu", "-v", "-S", "-aec", "WARD", "-od", dir, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.1.1", w.host, w.port).CombinedOutput()
	if err != nil || strings.Contains(string(out), "E: ") {
		t.Fatalf("getscu: %v\n%s", err, out)
	}
	compareReceived(t, dir, originals, uidsOf(a, "P1"))
}

// TestMoveToImplicitOnlySkipsUnconvertible: a C-MOVE to a storescp that
// accepts only Implicit VR Little Endian, of a study stored in explicit VR:
// the object that cannot be converted (an SQ tag sent with VR LO) fails its
// sub-operation alone, and the others arrive on the same association.
func TestMoveToImplicitOnlySkipsUnconvertible(t *testing.T) {
	requireTool(t, "movescu", "storescu")
	sport, sdir := startStorescp(t, "+xi")
	w := startWard(t, func(c *config.Config) {
		c.Peers = []config.Peer{{AETitle: "STORESCP", Host: "127.0.0.1", Port: sport, Allow: []string{config.MoveDestination}}}
	})
	const study = "1.2.826.0.1.3680043.8.498.20"
	src := t.TempDir()
	var files []string
	for i, bad := range []bool{false, true, false} {
		p := filepath.Join(src, fmt.Sprintf("%d.dcm", i+1))
		writeExplicitCT(t, p, fmt.Sprintf("%s.1.%d", study, i+1), study, bad)
		files = append(files, p)
	}
	if out, err := dcmtk("storescu", append([]string{"-aec", "WARD", w.host, w.port}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	out, _ := dcmtk("movescu", "-v", "-S", "-aec", "WARD", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, w.host, w.port).CombinedOutput()
	got, _ := filepath.Glob(filepath.Join(sdir, "*"))
	names := map[string]bool{}
	for _, p := range got {
		names[filepath.Base(p)] = true
	}
	if len(got) != 2 || !names["CT."+study+".1.1"] || !names["CT."+study+".1.3"] {
		t.Fatalf("received %v, want the two convertible objects\n%s", got, out)
	}
	if !strings.Contains(string(out), "Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)") {
		t.Fatalf("movescu: want a final warning for the failed sub-operation:\n%s", out)
	}
}

// TestMovescuToOrthanc: DCMTK movescu asks Ward to move a patient's studies
// to Orthanc (a registered peer); Orthanc receives every instance intact.
func TestMovescuToOrthanc(t *testing.T) {
	requireTool(t, "movescu", "storescu")
	requirePydicom(t)
	o := startOrthanc(t)
	w := startWard(t, func(c *config.Config) {
		c.Peers = []config.Peer{{AETitle: "ORTHANC", Host: "127.0.0.1", Port: o.DICOMPort, Allow: []string{config.MoveDestination}}}
	})
	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	var files []string
	for _, p := range originals {
		files = append(files, p)
	}
	if out, err := dcmtk("storescu", append([]string{"-aec", "WARD", w.host, w.port}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	out, err := dcmtk("movescu", "-v", "-P", "-aec", "WARD", "-aem", "ORTHANC", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P2", w.host, w.port).CombinedOutput()
	if err != nil || strings.Contains(string(out), "E: ") {
		t.Fatalf("movescu: %v\n%s", err, out)
	}
	want := uidsOf(a, "P2")
	var stats struct{ CountInstances int }
	o.GetJSON(t, "/statistics", &stats)
	if stats.CountInstances != len(want) {
		t.Fatalf("Orthanc holds %d instances, want %d", stats.CountInstances, len(want))
	}
	var ids []string
	o.GetJSON(t, "/instances", &ids)
	for _, id := range ids {
		var tags map[string]any
		o.GetJSON(t, "/instances/"+id+"/simplified-tags", &tags)
		uid, _ := tags["SOPInstanceUID"].(string)
		src, ok := originals[uid]
		if !ok {
			t.Errorf("Orthanc received %s, which was not asked for", uid)
			continue
		}
		p := filepath.Join(t.TempDir(), "o.dcm")
		os.WriteFile(p, o.Get(t, "/instances/"+id+"/file"), 0o644)
		if ok, diff := datasetsEqual(t, src, p); !ok {
			t.Errorf("%s differs in Orthanc:\n%s", uid, diff)
		}
	}
}
