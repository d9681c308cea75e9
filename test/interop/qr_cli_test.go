package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/internal/cli"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
	"github.com/ward-pacs/ward/test/harness"
)

// wardCLI runs a ward command in-process and returns stdout and the exit
// status; stderr goes to the test log on failure.
func wardCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(args, &out, &errb)
	if code != 0 {
		t.Logf("ward %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String(), code
}

// TestWardSCUAgainstFakeArchive exercises ward find/move/get against
// Ward's own dispatcher over the fake archive.
func TestWardSCUAgainstFakeArchive(t *testing.T) {
	requirePydicom(t)
	dst := &dimsetest.Archive{}
	ds, err := dimsetest.Start(dst, dimsetest.Options{AETitle: "DEST"})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	a := &dimsetest.Archive{Destinations: map[string]string{"DEST": ds.Addr}}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	s, err := dimsetest.Start(a, dimsetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	out, code := wardCLI(t, "find", "--aec", "WARD", "-S", "--level", "STUDY", "-k", "PatientID=P2", "-k", "StudyInstanceUID", "-k", "PatientName", s.Addr)
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, "DOE^P2") {
		t.Fatalf("find table:\n%s", out)
	}
	out, code = wardCLI(t, "find", "--json", "--aec", "WARD", "-P", "--level", "PATIENT", "-k", "0010,0020", "-k", "PatientName", s.Addr)
	var objs []map[string]map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &objs) != nil || len(objs) != 2 {
		t.Fatalf("find json:\n%s", out)
	}
	if objs[0]["00100010"]["vr"] != "PN" {
		t.Fatalf("json: %v", objs[0])
	}
	out, code = wardCLI(t, "move", "--aec", "WARD", "--dest", "DEST", "--level", "STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.2.1", s.Addr)
	if code != 0 || !strings.Contains(out, "2 completed, 0 failed") || len(dst.Objects()) != 2 {
		t.Fatalf("move:\n%s", out)
	}
	if _, code = wardCLI(t, "move", "--aec", "WARD", "--dest", "NOWHERE", "--level", "STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.2.1", s.Addr); code == 0 {
		t.Fatal("move to an unknown destination exited 0")
	}
	dir := t.TempDir()
	out, code = wardCLI(t, "get", "--aec", "WARD", "--out", dir, "-P", "--level", "PATIENT", "-k", "PatientID=P2", s.Addr)
	if code != 0 || !strings.Contains(out, "4 completed") {
		t.Fatalf("get:\n%s", out)
	}
	compareReceived(t, dir, originals, uidsOf(a, "P2"))
}

// dcmqrscp runs DCMTK's dcmqrscp on loopback with a generated config; the
// C-MOVE destinations are given as AE title -> port (on localhost).
func startDcmqrscp(t *testing.T, dests map[string]int) int {
	t.Helper()
	requireTool(t, "storescu")
	var hosts strings.Builder
	for ae, p := range dests {
		fmt.Fprintf(&hosts, "%s = (%s, localhost, %d)\n", strings.ToLower(ae), ae, p)
	}
	return harness.StartDcmqrscp(t, hosts.String(), "ANY", "-dhl")
}

func TestWardSCUAgainstDcmqrscp(t *testing.T) {
	requirePydicom(t)
	// The C-MOVE destination is a DCMTK storescp.
	sport, sdir := startStorescp(t)
	qport := startDcmqrscp(t, map[string]int{"STORESCP": sport})
	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	var files []string
	for _, p := range originals {
		files = append(files, p)
	}
	args := append([]string{"-aec", "DCMQRSCP", "-aet", "LOADER", "127.0.0.1", strconv.Itoa(qport)}, files...)
	if out, err := dcmtk("storescu", args...).CombinedOutput(); err != nil {
		t.Fatalf("loading dcmqrscp: %v\n%s", err, out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(qport)

	out, code := wardCLI(t, "find", "--aec", "DCMQRSCP", "-S", "--level", "STUDY", "-k", "PatientID=P2", "-k", "StudyInstanceUID", addr)
	if code != 0 || strings.Count(out, "1.2.826.0.1.3680043.10.1432.9.2.") != 2 {
		t.Fatalf("find:\n%s", out)
	}
	out, code = wardCLI(t, "find", "--json", "--aec", "DCMQRSCP", "-P", "--level", "PATIENT", "-k", "PatientID", "-k", "PatientName", addr)
	var objs []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &objs) != nil || len(objs) != 2 {
		t.Fatalf("find json:\n%s", out)
	}
	out, code = wardCLI(t, "move", "--aec", "DCMQRSCP", "--aet", "STORESCP", "--dest", "STORESCP", "-P", "--level", "PATIENT", "-k", "PatientID=P2", addr)
	if code != 0 || !strings.Contains(out, "4 completed, 0 failed") {
		t.Fatalf("move:\n%s", out)
	}
	compareReceived(t, sdir, originals, uidsOf(a, "P2"))
	dir := t.TempDir()
	out, code = wardCLI(t, "get", "--aec", "DCMQRSCP", "--out", dir, "-S", "--level", "STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.1.1", addr)
	if code != 0 || !strings.Contains(out, "2 completed") {
		t.Fatalf("get:\n%s", out)
	}
	compareReceived(t, dir, originals, uidsOf(a, "P1"))
}

func TestWardSCUAgainstOrthanc(t *testing.T) {
	requirePydicom(t)
	sport, sdir := startStorescp(t)
	o := startOrthanc(t, func(cfg map[string]any) {
		cfg["DicomModalities"] = map[string]any{
			"wardscu":  []any{"WARDSCU", "127.0.0.1", 1}, // Ward's calling AE (port unused)
			"storescp": []any{"STORESCP", "127.0.0.1", sport},
		}
	})
	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	var files []string
	for _, p := range originals {
		files = append(files, p)
	}
	args := append([]string{"-aec", "ORTHANC", "-aet", "LOADER", "127.0.0.1", strconv.Itoa(o.DICOMPort)}, files...)
	if out, err := dcmtk("storescu", args...).CombinedOutput(); err != nil {
		t.Fatalf("loading Orthanc: %v\n%s", err, out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(o.DICOMPort)
	out, code := wardCLI(t, "find", "--aec", "ORTHANC", "-S", "--level", "STUDY", "-k", "PatientID=P2", "-k", "StudyInstanceUID", addr)
	if code != 0 || strings.Count(out, "1.2.826.0.1.3680043.10.1432.9.2.") != 2 {
		t.Fatalf("find:\n%s", out)
	}
	out, code = wardCLI(t, "find", "--json", "--aec", "ORTHANC", "-S", "--level", "IMAGE", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.1.1", "-k", "SeriesInstanceUID=1.2.826.0.1.3680043.10.1432.9.1.1.1", "-k", "SOPInstanceUID", addr)
	var objs []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &objs) != nil || len(objs) != 2 {
		t.Fatalf("find json:\n%s", out)
	}
	out, code = wardCLI(t, "move", "--aec", "ORTHANC", "--dest", "STORESCP", "-S", "--level", "STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.2.2", addr)
	if code != 0 || !strings.Contains(out, "0 failed") {
		t.Fatalf("move:\n%s", out)
	}
	want := []string{}
	for _, u := range uidsOf(a, "P2") {
		if strings.HasPrefix(u, "1.2.826.0.1.3680043.10.1432.9.2.2.") {
			want = append(want, u)
		}
	}
	compareReceived(t, sdir, originals, want)
	dir := t.TempDir()
	out, code = wardCLI(t, "get", "--aec", "ORTHANC", "--out", dir, "-S", "--level", "STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.1.1", addr)
	if code != 0 {
		t.Fatalf("get:\n%s", out)
	}
	compareReceived(t, dir, originals, uidsOf(a, "P1"))
}
