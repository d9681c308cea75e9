package interop

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
)

// The tests in this file drive Ward's DIMSE dispatcher (C-FIND, C-MOVE,
// C-GET, C-CANCEL) with DCMTK's SCUs, over an in-memory fake archive
// (network/dimse/dimsetest), so they do not depend on the real query
// engine.

// fakeCorpus: patients P1 (1 study) and P2 (2 studies), 2 instances per
// study, in Explicit and Implicit VR Little Endian.
func fakeCorpus() []*dimsetest.Object {
	var out []*dimsetest.Object
	n := 0
	for p := 1; p <= 2; p++ {
		for s := 1; s <= p; s++ {
			for i := 1; i <= 2; i++ {
				n++
				ts := dicom.ExplicitVRLittleEndian
				if n%2 == 0 {
					ts = dicom.ImplicitVRLittleEndian
				}
				out = append(out, dimsetest.NewObject(map[string]string{
					"PatientID": fmt.Sprintf("P%d", p), "PatientName": fmt.Sprintf("DOE^P%d", p),
					"StudyInstanceUID":  fmt.Sprintf("1.2.826.0.1.3680043.10.1432.9.%d.%d", p, s),
					"SeriesInstanceUID": fmt.Sprintf("1.2.826.0.1.3680043.10.1432.9.%d.%d.1", p, s),
					"SOPInstanceUID":    fmt.Sprintf("1.2.826.0.1.3680043.10.1432.9.%d.%d.1.%d", p, s, i),
					"StudyDate":         "20240101", "Modality": "CT", "StudyID": fmt.Sprintf("S%d", s),
				}, ts, ""))
			}
		}
	}
	return out
}

func startFake(t *testing.T, a *dimsetest.Archive) (host, port string) {
	t.Helper()
	s, err := dimsetest.Start(a, dimsetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	host, port, _ = net.SplitHostPort(s.Addr)
	return host, port
}

var pendingRE = regexp.MustCompile(`Find Response: \d+ \(Pending\)`)

func TestFindscuAgainstFakeFinder(t *testing.T) {
	requireTool(t, "findscu")
	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	host, port := startFake(t, a)
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"study root STUDY by PatientID", []string{"-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P2", "-k", "StudyInstanceUID"}, 2},
		{"study root STUDY name wildcard", []string{"-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=DOE^P*", "-k", "StudyInstanceUID"}, 3},
		{"study root SERIES", []string{"-S", "-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.2.1", "-k", "SeriesInstanceUID"}, 1},
		{"study root IMAGE", []string{"-S", "-k", "QueryRetrieveLevel=IMAGE", "-k", "PatientID=P2", "-k", "SOPInstanceUID"}, 4},
		{"patient root PATIENT", []string{"-P", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID", "-k", "PatientName"}, 2},
		{"patient root STUDY", []string{"-P", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P1", "-k", "StudyInstanceUID"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-v", "-aet", "FINDSCU", "-aec", "WARD"}, tc.args...)
			out, err := dcmtk("findscu", append(args, host, port)...).CombinedOutput()
			if err != nil || strings.Contains(string(out), "E: ") || strings.Contains(string(out), "F: ") {
				t.Fatalf("findscu: %v\n%s", err, out)
			}
			if got := len(pendingRE.FindAllString(string(out), -1)); got != tc.want {
				t.Fatalf("%d pending responses, want %d\n%s", got, tc.want, out)
			}
			if !strings.Contains(string(out), "(Success)") {
				t.Fatalf("no final success\n%s", out)
			}
		})
	}
}

func TestFindscuCancel(t *testing.T) {
	requireTool(t, "findscu")
	// The matches come at an index's pace (50 µs each, 3 s for all):
	// how many cross the C-CANCEL then depends on when it arrives, not on
	// how fast Ward encodes and sends a response (an instant Finder let
	// thousands reach the socket buffers first).
	a := &dimsetest.Archive{FindRepeat: 10000, FindDelay: 50 * time.Microsecond}
	a.Add(fakeCorpus()...)
	host, port := startFake(t, a)
	out, err := dcmtk("findscu", "-v", "-S", "--cancel", "3", "-aet", "FINDSCU", "-aec", "WARD",
		"-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID", host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("findscu: %v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "Cancel") {
		t.Fatalf("no cancel status\n%s", s)
	}
	// A few pending responses may cross the C-CANCEL; far fewer than 60000.
	n := len(pendingRE.FindAllString(s, -1))
	if n < 3 || n > 1000 {
		t.Fatalf("%d pending responses\n%s", n, s)
	}
	t.Logf("%d pending responses", n)
	if a.FindCancelled.Load() != 1 {
		t.Fatalf("the Finder's context was not cancelled")
	}
}

// writeOriginals writes the fake archive's objects as Part 10 files, by
// SOP Instance UID.
func writeOriginals(t *testing.T, a *dimsetest.Archive) map[string]string {
	t.Helper()
	dir := t.TempDir()
	m := map[string]string{}
	for _, o := range a.Objects() {
		p := filepath.Join(dir, o.SOPInstanceUID+".dcm")
		if err := o.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		m[o.SOPInstanceUID] = p
	}
	return m
}

// compareReceived checks that dir holds exactly the wanted instances and
// that each equals the original.
func compareReceived(t *testing.T, dir string, originals map[string]string, want []string) {
	t.Helper()
	var got []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		uid, _ := sopInstanceOf(t, p)
		if uid == "" {
			return nil
		}
		got = append(got, uid)
		orig, ok := originals[uid]
		if !ok {
			t.Errorf("received unknown instance %s", uid)
			return nil
		}
		if eq, diff := datasetsEqual(t, orig, p); !eq {
			t.Errorf("%s differs from the original:\n%s", uid, diff)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("received %v, want %v", got, want)
	}
}

func uidsOf(a *dimsetest.Archive, patient string) []string {
	var out []string
	for _, o := range a.Objects() {
		if o.DS.String(dicom.PatientID) == patient {
			out = append(out, o.SOPInstanceUID)
		}
	}
	return out
}

func TestMovescuToStorescp(t *testing.T) {
	requireTool(t, "movescu")
	requirePydicom(t)
	sport, sdir := startStorescp(t)
	a := &dimsetest.Archive{Destinations: map[string]string{"STORESCP": "127.0.0.1:" + strconv.Itoa(sport)}}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	host, port := startFake(t, a)
	for _, study := range []string{"1.2.826.0.1.3680043.10.1432.9.2.1", "1.2.826.0.1.3680043.10.1432.9.2.2"} {
		out, err := dcmtk("movescu", "-v", "-S", "-aet", "MOVESCU", "-aec", "WARD", "-aem", "STORESCP",
			"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="+study, host, port).CombinedOutput()
		if err != nil || strings.Contains(string(out), "E: ") || !strings.Contains(string(out), "Success") {
			t.Fatalf("movescu: %v\n%s", err, out)
		}
	}
	compareReceived(t, sdir, originals, uidsOf(a, "P2"))
	// Unknown destination: A801.
	out, _ := dcmtk("movescu", "-v", "-S", "-aet", "MOVESCU", "-aec", "WARD", "-aem", "NOWHERE",
		"-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.10.1432.9.2.1", host, port).CombinedOutput()
	if !strings.Contains(strings.ToLower(string(out)), "a801") && !strings.Contains(string(out), "MoveDestinationUnknown") {
		t.Fatalf("unknown destination not refused with A801\n%s", out)
	}
}

func TestGetscu(t *testing.T) {
	requireTool(t, "getscu")
	requirePydicom(t)
	a := &dimsetest.Archive{}
	a.Add(fakeCorpus()...)
	originals := writeOriginals(t, a)
	host, port := startFake(t, a)
	dir := t.TempDir()
	out, err := dcmtk("getscu", "-v", "-P", "-aet", "GETSCU", "-aec", "WARD", "-od", dir,
		"-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P2", host, port).CombinedOutput()
	if err != nil || strings.Contains(string(out), "E: ") {
		t.Fatalf("getscu: %v\n%s", err, out)
	}
	compareReceived(t, dir, originals, uidsOf(a, "P2"))
}
