package audit

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	ward = Node{AETitle: "WARD", Addr: "127.0.0.1"}
	peer = Node{AETitle: "MODALITY", Addr: "127.0.0.2"}
)

func writeN(t testing.TB, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := l.Write(Query(ward, peer, "1.2.840.10008.5.1.4.1.2.2.1", []byte{byte(i)}, "1.2.840.10008.1.2", OutcomeSuccess, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
}

func readLines(t testing.TB, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func writeLines(t *testing.T, dir string, lines []string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func verifyDir(t *testing.T, dir string) (int, error) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Verify(f)
}

func newLog(t testing.TB, dir string, n int) {
	t.Helper()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestChainVerifies(t *testing.T) {
	dir := t.TempDir()
	newLog(t, dir, 10)
	n, err := verifyDir(t, dir)
	if err != nil || n != 10 {
		t.Fatalf("verify: %d, %v", n, err)
	}
	lines := readLines(t, dir)
	if !strings.Contains(lines[0], `"prev":"`+ZeroHash+`"`) {
		t.Errorf("first record does not start the chain: %s", lines[0])
	}
}

func TestVerifyNamesFirstBrokenRecord(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func([]string) []string
		line     int
		seq      uint64
		contains string
	}{
		{"edited", func(l []string) []string {
			l[3] = strings.Replace(l[3], "MODALITY", "MODALITX", 1)
			return l
		}, 4, 4, "altered"},
		{"deleted", func(l []string) []string { return append(l[:5], l[6:]...) }, 6, 7, "seq 7 follows seq 5"},
		{"reordered", func(l []string) []string { l[2], l[3] = l[3], l[2]; return l }, 3, 4, "follows"},
		{"truncated", func(l []string) []string { l[9] = l[9][:40]; return l }, 10, 0, "not a record"},
		{"rechained", func(l []string) []string {
			// An edited record with a recomputed own hash still breaks
			// the next record's prev.
			var r Record
			if err := jsonUnmarshal(l[4], &r); err != nil {
				t.Fatal(err)
			}
			r.Event = "forged"
			b, _ := r.encode(nil)
			l[4] = string(b)
			return l
		}, 6, 6, "prev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			newLog(t, dir, 10)
			writeLines(t, dir, tc.edit(readLines(t, dir)))
			_, err := verifyDir(t, dir)
			var be *BreakError
			if !errors.As(err, &be) || !errors.Is(err, ErrBroken) {
				t.Fatalf("verify: %v, want a break", err)
			}
			if be.Line != tc.line || be.Seq != tc.seq || !strings.Contains(be.Reason, tc.contains) {
				t.Errorf("break at line %d seq %d (%s), want line %d seq %d (%s)", be.Line, be.Seq, be.Reason, tc.line, tc.seq, tc.contains)
			}
		})
	}
}

func TestRestartContinuesChain(t *testing.T) {
	dir := t.TempDir()
	newLog(t, dir, 3)
	newLog(t, dir, 4)
	n, err := verifyDir(t, dir)
	if err != nil || n != 7 {
		t.Fatalf("verify: %d, %v", n, err)
	}
}

func TestSecondWriterRefused(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l2, err := Open(dir, nil); !errors.Is(err, ErrLocked) {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestRestartCutsPartialRecord(t *testing.T) {
	dir := t.TempDir()
	newLog(t, dir, 3)
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":4,"time":"20`) // a crash in the middle of an append
	f.Close()
	newLog(t, dir, 2)
	n, err := verifyDir(t, dir)
	if err != nil || n != 5 {
		t.Fatalf("verify: %d, %v", n, err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeN(t, l, 200)
		}()
	}
	wg.Wait()
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if n, err := verifyDir(t, dir); err != nil || n != 3200 {
		t.Fatalf("after sync: %d, %v", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(ApplicationActivity(ward, false, time.Now())); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

// TestBoundedQueue: with the writer stalled, senders block once the queue
// is full rather than growing memory or dropping records; every record
// lands once it resumes.
func TestBoundedQueue(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Stall the writer: hold a flush barrier's answer channel unread.
	stall := make(chan error) // unbuffered: the writer blocks answering
	l.ch <- item{flush: stall}
	sent := make(chan int, QueueLength+10)
	go func() {
		for i := 0; i < QueueLength+10; i++ {
			writeN(t, l, 1)
			sent <- i
		}
		close(sent)
	}()
	deadline := time.After(5 * time.Second)
	count := 0
wait:
	for {
		select {
		case _, ok := <-sent:
			if !ok {
				break wait
			}
			count++
		case <-time.After(200 * time.Millisecond):
			break wait
		case <-deadline:
			break wait
		}
	}
	if count > QueueLength+1 {
		t.Fatalf("%d writes returned with the writer stalled; the queue holds %d", count, QueueLength)
	}
	if count < QueueLength-1 {
		t.Fatalf("only %d writes returned; the queue should take %d", count, QueueLength)
	}
	<-stall // release the writer
	for range sent {
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := verifyDir(t, dir); err != nil || n != QueueLength+10 {
		t.Fatalf("verify: %d, %v", n, err)
	}
}

func TestMessageSchema(t *testing.T) {
	st := &Study{UID: "1.2.3", PatientID: "PID1", Classes: map[string]int{"1.2.840.10008.5.1.4.1.1.7": 3}}
	m := InstancesTransferred(ward, peer, ward, peer, ActionCreate, OutcomeSuccess, []*Study{st}, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<AuditMessage><EventIdentification EventActionCode="C" EventDateTime="2026-01-02T03:04:05Z" EventOutcomeIndicator="0"><EventID csd-code="110104" codeSystemName="DCM" originalText="DICOM Instances Transferred">`,
		`<ActiveParticipant UserID="MODALITY" UserIsRequestor="true" NetworkAccessPointID="127.0.0.2" NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="110153"`,
		`<ActiveParticipant UserID="WARD" UserIsRequestor="false"`,
		`<AuditSourceIdentification AuditSourceID="WARD">`,
		`<ParticipantObjectIdentification ParticipantObjectID="1.2.3" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="110180"`,
		`<ParticipantObjectDetail type="NumberOfInstances" value="Mw=="></ParticipantObjectDetail>`,
		`<SOPClass UID="1.2.840.10008.5.1.4.1.1.7" NumberOfInstances="3"></SOPClass>`,
		`<ParticipantObjectIdentification ParticipantObjectID="PID1" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1">`,
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("missing %s\nin %s", want, b)
		}
	}
	var back Message
	if err := xml.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Name() != "instances-transferred" || fmt.Sprint(back.Patients()) != "[PID1]" || fmt.Sprint(back.Peers()) != "[MODALITY]" {
		t.Errorf("round trip: %s %v %v", back.Name(), back.Patients(), back.Peers())
	}
	q := Query(ward, peer, "1.2.840.10008.5.1.4.1.2.2.1", []byte("ident"), "1.2.840.10008.1.2", OutcomeSuccess, time.Now())
	if b, _ := q.Marshal(); !bytes.Contains(b, []byte("<ParticipantObjectQuery>aWRlbnQ=</ParticipantObjectQuery>")) {
		t.Errorf("query: %s", b)
	}
}

// TestSourceNamesNode: the records of a node name it in the audit source
// (AET@NODE) and as the Ward participant's alternative user ID, so that
// the trails of a cluster's nodes, which share an AE title, tell them
// apart.
func TestSourceNamesNode(t *testing.T) {
	n := Node{AETitle: "WARD", ID: "node-a", Addr: "10.0.0.1"}
	b, err := ApplicationActivity(n, true, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<AuditSourceIdentification AuditSourceID="WARD@node-a">`, `AlternativeUserID="node-a"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("missing %s\nin %s", want, b)
		}
	}
	// Ward is not among the peers (the index of the log's records).
	peer := Node{AETitle: "MODALITY", Addr: "10.0.0.2", ID: "op"}
	if got := Authentication(n, peer, true, "", time.Now()).Peers(); len(got) != 1 || got[0] != "MODALITY" {
		t.Errorf("peers %v, want [MODALITY]", got)
	}
}
