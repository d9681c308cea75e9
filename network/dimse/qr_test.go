package dimse_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
	"github.com/ward-pacs/ward/network/pdu"
)

const jpegBaseline = "1.2.840.10008.1.2.4.50"

// corpus: 2 patients, 3 studies, 6 instances; one instance "stored" in a
// compressed syntax that cannot be converted.
func corpus() []*dimsetest.Object {
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
				label := ""
				if n == 6 {
					label = jpegBaseline
				}
				out = append(out, dimsetest.NewObject(map[string]string{
					"PatientID": fmt.Sprintf("P%d", p), "PatientName": fmt.Sprintf("DOE^P%d", p),
					"StudyInstanceUID":  fmt.Sprintf("1.2.3.%d.%d", p, s),
					"SeriesInstanceUID": fmt.Sprintf("1.2.3.%d.%d.1", p, s),
					"SOPInstanceUID":    fmt.Sprintf("1.2.3.%d.%d.1.%d", p, s, i),
					"StudyDate":         "20240101", "Modality": "CT",
				}, ts, label))
			}
		}
	}
	return out
}

func startArchive(t *testing.T, a *dimsetest.Archive, opt dimsetest.Options) string {
	t.Helper()
	s, err := dimsetest.Start(a, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Addr
}

func qrAssoc(t *testing.T, addr string, extra ...pdu.PresentationContext) *dimse.Client {
	t.Helper()
	ts := []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}
	pcs := []pdu.PresentationContext{
		{ID: 1, AbstractSyntax: dimse.StudyRootFind, TransferSyntaxes: ts},
		{ID: 3, AbstractSyntax: dimse.PatientRootFind, TransferSyntaxes: ts[1:]},
		{ID: 5, AbstractSyntax: dimse.StudyRootMove, TransferSyntaxes: ts},
		{ID: 7, AbstractSyntax: dimse.StudyRootGet, TransferSyntaxes: ts},
		{ID: 9, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: ts},
	}
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "QRSCU", ApplicationContext: pdu.ApplicationContextName, Contexts: append(pcs, extra...)}
	for _, pc := range extra {
		if dicom.IsStorageSOPClass(pc.AbstractSyntax) {
			rq.UserInfo.Roles = append(rq.UserInfo.Roles, pdu.RoleSelection{SOPClassUID: pc.AbstractSyntax, SCU: false, SCP: true})
		}
	}
	a, err := assoc.Dial(context.Background(), "tcp", addr, assoc.Config{AETitle: "QRSCU"}, rq)
	if err != nil {
		t.Fatal(err)
	}
	cl := dimse.NewClient(a)
	t.Cleanup(func() {
		select {
		case <-a.Done():
		default:
			_ = a.Release()
		}
	})
	return cl
}

func ident(level string, kv ...string) *dicom.DataSet {
	ds := &dicom.DataSet{}
	ds.Set(dicom.QueryRetrieveLevel, level)
	for i := 0; i+1 < len(kv); i += 2 {
		tag, ok := dicom.TagByKeyword(kv[i])
		if !ok {
			panic(kv[i])
		}
		ds.Set(tag, kv[i+1])
	}
	return ds
}

func TestFindPendingAndFinal(t *testing.T) {
	a := &dimsetest.Archive{}
	a.Add(corpus()...)
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{}))
	for _, tc := range []struct {
		ctx  byte
		id   *dicom.DataSet
		want []string
	}{
		{1, ident("STUDY", "PatientID", "P2", "StudyInstanceUID", ""), []string{"1.2.3.2.1", "1.2.3.2.2"}},
		{1, ident("STUDY", "PatientName", "doe^p1*", "StudyInstanceUID", ""), []string{"1.2.3.1.1"}},
		{3, ident("PATIENT", "PatientID", "", "PatientName", ""), []string{"DOE^P1", "DOE^P2"}},
		{1, ident("STUDY", "PatientID", "NOBODY", "StudyInstanceUID", ""), nil},
	} {
		var got []string
		rsp, err := cl.Find(context.Background(), tc.ctx, tc.id, func(m *dicom.DataSet) error {
			if v := m.String(dicom.StudyInstanceUID); v != "" {
				got = append(got, v)
			} else {
				got = append(got, m.String(dicom.PatientName))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if rsp.Status != dimse.StatusSuccess {
			t.Fatalf("final status 0x%04X", rsp.Status)
		}
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("matches %v, want %v", got, tc.want)
		}
	}
	// The association is still usable for other services.
	if err := cl.Echo(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestFindCancelMidStream(t *testing.T) {
	a := &dimsetest.Archive{FindDelay: 20 * time.Millisecond, FindRepeat: 1000}
	a.Add(corpus()...)
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{}))
	n := 0
	start := time.Now()
	rsp, err := cl.Find(context.Background(), 1, ident("IMAGE", "SOPInstanceUID", ""), func(m *dicom.DataSet) error {
		n++
		if n == 3 {
			return dimse.ErrStop
		}
		return nil
	})
	if !errors.Is(err, dimse.ErrStop) {
		t.Fatalf("err = %v", err)
	}
	if rsp.Status != dimse.StatusCancel {
		t.Fatalf("final status 0x%04X, want FE00", rsp.Status)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("cancel took %s", time.Since(start))
	}
	if a.FindCancelled.Load() != 1 {
		t.Fatalf("the Finder's context was not cancelled")
	}
	// Cancelling through the context works too.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	rsp, err = cl.Find(ctx, 1, ident("IMAGE", "SOPInstanceUID", ""), func(*dicom.DataSet) error { return nil })
	if err != nil || rsp.Status != dimse.StatusCancel {
		t.Fatalf("ctx cancel: %v, status 0x%04X", err, rsp.Status)
	}
	if err := cl.Echo(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// rawRequest sends a request with a raw identifier and returns the
// responses up to the final one.
func rawRequest(t *testing.T, cl *dimse.Client, ctxID byte, cmd *dimse.Command, data []byte) []*dimse.Command {
	t.Helper()
	var r io.Reader
	if data != nil {
		r = bytes.NewReader(data)
	}
	if err := cl.WriteMessage(ctxID, cmd, r); err != nil {
		t.Fatal(err)
	}
	var out []*dimse.Command
	for {
		m, err := cl.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Command)
		if dimse.CategoryOf(m.Command.Status) != dimse.CategoryPending {
			return out
		}
	}
}

func TestMalformedIdentifiers(t *testing.T) {
	a := &dimsetest.Archive{}
	a.Add(corpus()...)
	rf := &refusals{Archive: a}
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{Dispatcher: rf.handlers}))
	nl := &dicom.DataSet{}
	nl.Set(dicom.PatientID, "P1")
	noLevel, _ := nl.Bytes(dicom.ExplicitVRLittleEndian)
	badLevel, _ := ident("WARD").Bytes(dicom.ExplicitVRLittleEndian)
	for _, tc := range []struct {
		name  string
		cmd   *dimse.Command
		data  []byte
		want  uint16
		ctxID byte
		// refused: the dispatcher refused it before the handler, and
		// told the handler (with the identifier when decoded: ident).
		refused, ident bool
	}{
		{"garbage", &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 100, AffectedSOPClassUID: dimse.StudyRootFind}, []byte{0x10, 0x00, 0x10, 0x00, 'P', 'N', 0xff, 0xff, 1, 2}, dimse.StatusDataSetMismatch, 1, true, false},
		{"no level", &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 101, AffectedSOPClassUID: dimse.StudyRootFind}, noLevel, dimse.StatusDataSetMismatch, 1, true, true},
		{"bad level", &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 102, AffectedSOPClassUID: dimse.StudyRootFind}, badLevel, dimse.StatusDataSetMismatch, 1, false, false},
		{"no identifier", &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 103, AffectedSOPClassUID: dimse.StudyRootFind}, nil, dimse.StatusCannotUnderstand, 1, true, false},
		{"find on a move context", &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 104, AffectedSOPClassUID: dimse.StudyRootMove}, badLevel, dimse.StatusSOPClassNotSupported, 5, true, false},
		{"move without destination", &dimse.Command{CommandField: dimse.CMoveRQ, MessageID: 105, AffectedSOPClassUID: dimse.StudyRootMove}, badLevel, dimse.StatusMoveDestinationUnknown, 5, true, false},
		{"move garbage", &dimse.Command{CommandField: dimse.CMoveRQ, MessageID: 106, AffectedSOPClassUID: dimse.StudyRootMove, MoveDestination: "X"}, []byte{1, 2, 3}, dimse.StatusDataSetMismatch, 5, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rsps := rawRequest(t, cl, tc.ctxID, tc.cmd, tc.data)
			f := rsps[len(rsps)-1]
			if f.Status != tc.want || f.MessageIDBeingRespondedTo != tc.cmd.MessageID {
				t.Fatalf("status 0x%04X (%s), want 0x%04X", f.Status, f.ErrorComment, tc.want)
			}
			if f.ErrorComment == "" {
				t.Errorf("no error comment")
			}
			got := rf.take()
			switch {
			case !tc.refused && len(got) != 0:
				t.Errorf("refused by the handler, yet told as refused: %+v", got)
			case !tc.refused:
			case len(got) != 1 || got[0].Command.MessageID != tc.cmd.MessageID || got[0].Status.Status != tc.want || !strings.HasPrefix(got[0].Status.Comment, f.ErrorComment):
				t.Errorf("refusals told %+v", got)
			case (got[0].Identifier != nil) != tc.ident:
				t.Errorf("identifier told %v, want %v", got[0].Identifier, tc.ident)
			}
		})
	}
	if err := cl.Echo(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestFindHandlerPanic(t *testing.T) {
	a := &dimsetest.Archive{PanicFind: true}
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{}))
	rsp, err := cl.Find(context.Background(), 1, ident("STUDY"), func(*dicom.DataSet) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if rsp.Status != dimse.StatusUnableToProcess {
		t.Fatalf("status 0x%04X", rsp.Status)
	}
}

func TestRequestDuringOperationFails(t *testing.T) {
	a := &dimsetest.Archive{FindDelay: 30 * time.Millisecond, FindRepeat: 10}
	a.Add(corpus()...)
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{}))
	id, _ := ident("IMAGE", "SOPInstanceUID", "").Bytes(dicom.ExplicitVRLittleEndian)
	if err := cl.WriteMessage(1, &dimse.Command{CommandField: dimse.CFindRQ, MessageID: 7, AffectedSOPClassUID: dimse.StudyRootFind}, bytes.NewReader(id)); err != nil {
		t.Fatal(err)
	}
	if err := cl.WriteMessage(9, &dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 8, AffectedSOPClassUID: dimse.VerificationSOPClass}, nil); err != nil {
		t.Fatal(err)
	}
	var echo *dimse.Command
	for {
		m, err := cl.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if m.Command.CommandField == dimse.CEchoRSP {
			echo = m.Command
			if err := cl.WriteMessage(1, &dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 7}, nil); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if dimse.CategoryOf(m.Command.Status) != dimse.CategoryPending {
			if m.Command.Status != dimse.StatusCancel {
				t.Fatalf("find final 0x%04X", m.Command.Status)
			}
			break
		}
	}
	if echo == nil || dimse.CategoryOf(echo.Status) != dimse.CategoryFailure {
		t.Fatalf("C-ECHO during C-FIND: %+v", echo)
	}
}

// destination starts a storage-only peer accepting CT only in syntaxes.
func destination(t *testing.T, syntaxes []string, fail ...string) (*dimsetest.Archive, string) {
	dst := &dimsetest.Archive{FailStore: map[string]bool{}}
	for _, f := range fail {
		dst.FailStore[f] = true
	}
	return dst, startArchive(t, dst, dimsetest.Options{AETitle: "DEST", StorageSyntaxes: syntaxes})
}

func TestMoveCountsConversionAndFailedUIDs(t *testing.T) {
	// The destination accepts only Implicit VR LE: the Explicit VR objects
	// are converted, the "JPEG" one cannot be and fails, and one store is
	// refused by the destination.
	dst, dstAddr := destination(t, []string{dicom.ImplicitVRLittleEndian.UID}, "1.2.3.2.1.1.1")
	a := &dimsetest.Archive{Destinations: map[string]string{"DEST": dstAddr}}
	objs := corpus()
	a.Add(objs...)
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{}))
	var pend []*dimse.Command
	res, err := cl.Move(context.Background(), 5, "DEST", ident("PATIENT", "PatientID", "P2"), func(c *dimse.Command) { pend = append(pend, c) })
	if err != nil {
		t.Fatal(err)
	}
	f := res.Final
	if f.Status != dimse.StatusSubOpsWarning || f.NumberOfCompleted != 2 || f.NumberOfFailed != 2 || f.NumberOfWarning != 0 || f.Has(dimse.TagNumberOfRemaining) {
		t.Fatalf("final: status 0x%04X completed %d failed %d warning %d (remaining present %v)", f.Status, f.NumberOfCompleted, f.NumberOfFailed, f.NumberOfWarning, f.Has(dimse.TagNumberOfRemaining))
	}
	sort.Strings(res.FailedSOPInstanceUIDs)
	if fmt.Sprint(res.FailedSOPInstanceUIDs) != "[1.2.3.2.1.1.1 1.2.3.2.2.1.2]" {
		t.Fatalf("failed UIDs %v", res.FailedSOPInstanceUIDs)
	}
	if len(pend) != 3 || pend[0].NumberOfRemaining != 3 || pend[2].NumberOfRemaining != 1 {
		t.Fatalf("pending responses: %d", len(pend))
	}
	got := dst.Objects()
	if len(got) != 2 {
		t.Fatalf("destination holds %d objects", len(got))
	}
	for _, o := range got {
		if o.TransferSyntaxUID != dicom.ImplicitVRLittleEndian.UID || o.MoveOriginator != "QRSCU" {
			t.Errorf("%s: ts %s originator %q", o.SOPInstanceUID, o.TransferSyntaxUID, o.MoveOriginator)
		}
		orig := a.Get(o.SOPInstanceUID)
		for _, tag := range []dicom.Tag{dicom.PatientName, dicom.StudyInstanceUID, dicom.Rows, dicom.PixelData} {
			if !bytes.Equal(o.DS.Get(tag).Value, orig.DS.Get(tag).Value) {
				t.Errorf("%s: %v differs after conversion", o.SOPInstanceUID, tag)
			}
		}
	}
}

func TestMoveAllFailedAndUnknownDestination(t *testing.T) {
	_, dstAddr := destination(t, []string{dicom.ImplicitVRLittleEndian.UID}, "1.2.3.1.1.1.1", "1.2.3.1.1.1.2")
	a := &dimsetest.Archive{Destinations: map[string]string{"DEST": dstAddr, "GONE": "127.0.0.1:1"}}
	a.Add(corpus()...)
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{}))
	res, err := cl.Move(context.Background(), 5, "DEST", ident("PATIENT", "PatientID", "P1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Final.Status != dimse.StatusOutOfResourcesSubOps || res.Final.NumberOfFailed != 2 || len(res.FailedSOPInstanceUIDs) != 2 {
		t.Fatalf("all failed: 0x%04X failed %d uids %v", res.Final.Status, res.Final.NumberOfFailed, res.FailedSOPInstanceUIDs)
	}
	res, err = cl.Move(context.Background(), 5, "NOWHERE", ident("PATIENT", "PatientID", "P1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Final.Status != dimse.StatusMoveDestinationUnknown {
		t.Fatalf("unknown destination: 0x%04X", res.Final.Status)
	}
	// A destination that does not answer: every sub-operation fails.
	res, err = cl.Move(context.Background(), 5, "GONE", ident("PATIENT", "PatientID", "P1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Final.Status != dimse.StatusOutOfResourcesSubOps || res.Final.NumberOfFailed != 2 {
		t.Fatalf("unreachable destination: 0x%04X", res.Final.Status)
	}
	// Nothing matches: success with zero counts.
	res, err = cl.Move(context.Background(), 5, "DEST", ident("PATIENT", "PatientID", "NOBODY"), nil)
	if err != nil || res.Final.Status != dimse.StatusSuccess || res.Failed() {
		t.Fatalf("empty move: %v %+v", err, res)
	}
}

// memStorer collects objects received by the C-GET SCU.
type memStorer struct {
	mu   sync.Mutex
	objs map[string]string // uid -> ts
	fail map[string]bool
}

func (m *memStorer) Store(ctx context.Context, r *dimse.StoreRequest) error {
	if _, err := io.Copy(io.Discard, r.Data); err != nil {
		return err
	}
	if m.fail[r.SOPInstanceUID] {
		return errors.New("refused")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[r.SOPInstanceUID] = r.TransferSyntaxUID
	return nil
}

func TestGetCountsConversionAndFailedUIDs(t *testing.T) {
	a := &dimsetest.Archive{}
	a.Add(corpus()...)
	// Only Implicit VR LE offered for CT with the SCP role.
	addr := startArchive(t, a, dimsetest.Options{})
	cl := qrAssoc(t, addr, pdu.PresentationContext{ID: 11, AbstractSyntax: dimsetest.CTImageStorage, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}})
	st := &memStorer{objs: map[string]string{}, fail: map[string]bool{"1.2.3.2.1.1.1": true}}
	var pend int
	res, err := cl.Get(context.Background(), 7, ident("PATIENT", "PatientID", "P2"), st, func(*dimse.Command) { pend++ })
	if err != nil {
		t.Fatal(err)
	}
	f := res.Final
	if f.Status != dimse.StatusSubOpsWarning || f.NumberOfCompleted != 2 || f.NumberOfFailed != 2 {
		t.Fatalf("final 0x%04X completed %d failed %d", f.Status, f.NumberOfCompleted, f.NumberOfFailed)
	}
	sort.Strings(res.FailedSOPInstanceUIDs)
	if fmt.Sprint(res.FailedSOPInstanceUIDs) != "[1.2.3.2.1.1.1 1.2.3.2.2.1.2]" || pend != 3 {
		t.Fatalf("failed %v pending %d", res.FailedSOPInstanceUIDs, pend)
	}
	for uid, ts := range st.objs {
		if ts != dicom.ImplicitVRLittleEndian.UID {
			t.Errorf("%s received in %s", uid, ts)
		}
	}
	// Without the SCP role nothing can be sent.
	cl2 := qrAssoc(t, startArchive(t, a, dimsetest.Options{NoSCPRole: true}), pdu.PresentationContext{ID: 11, AbstractSyntax: dimsetest.CTImageStorage, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}})
	res, err = cl2.Get(context.Background(), 7, ident("PATIENT", "PatientID", "P1"), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Final.Status != dimse.StatusOutOfResourcesSubOps || res.Final.NumberOfFailed != 2 {
		t.Fatalf("no SCP role: 0x%04X failed %d", res.Final.Status, res.Final.NumberOfFailed)
	}
}

func TestGetCancel(t *testing.T) {
	a := &dimsetest.Archive{}
	for i := 0; i < 50; i++ {
		a.Add(dimsetest.NewObject(map[string]string{"PatientID": "P", "StudyInstanceUID": "1.2", "SOPInstanceUID": fmt.Sprintf("1.2.%d", i+1)}, dicom.ExplicitVRLittleEndian, ""))
	}
	cl := qrAssoc(t, startArchive(t, a, dimsetest.Options{}), pdu.PresentationContext{ID: 11, AbstractSyntax: dimsetest.CTImageStorage, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID}})
	ctx, cancel := context.WithCancel(context.Background())
	st := &memStorer{objs: map[string]string{}}
	res, err := cl.Get(ctx, 7, ident("STUDY", "StudyInstanceUID", "1.2"), st, func(c *dimse.Command) {
		if c.NumberOfCompleted == 3 {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Final
	if f.Status != dimse.StatusCancel || !f.Has(dimse.TagNumberOfRemaining) || int(f.NumberOfRemaining)+int(f.NumberOfCompleted) != 50 || f.NumberOfCompleted < 3 {
		t.Fatalf("final 0x%04X remaining %d completed %d", f.Status, f.NumberOfRemaining, f.NumberOfCompleted)
	}
	if err := cl.Echo(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSelectContext(t *testing.T) {
	ctxs := map[byte]*assoc.Context{
		1: {ID: 1, AbstractSyntax: "1.2", TransferSyntax: dicom.ImplicitVRLittleEndian.UID},
		3: {ID: 3, AbstractSyntax: "1.2", TransferSyntax: dicom.ExplicitVRLittleEndian.UID},
		5: {ID: 5, AbstractSyntax: "1.2", TransferSyntax: jpegBaseline},
		7: {ID: 7, AbstractSyntax: "1.3", TransferSyntax: jpegBaseline},
	}
	for _, tc := range []struct {
		class, ts string
		want      byte
	}{
		{"1.2", jpegBaseline, 5},
		{"1.2", dicom.ImplicitVRLittleEndian.UID, 1},
		{"1.2", dicom.ExplicitVRBigEndian.UID, 3},
		{"1.3", dicom.ExplicitVRLittleEndian.UID, 0},
		{"1.3", "1.2.840.10008.1.2.4.70", 0},
		{"1.4", jpegBaseline, 0},
	} {
		pc, err := dimse.SelectContext(ctxs, tc.class, tc.ts, nil)
		switch {
		case tc.want == 0 && !errors.Is(err, dimse.ErrNoContext):
			t.Errorf("%s %s: %v, want ErrNoContext", tc.class, tc.ts, err)
		case tc.want != 0 && (err != nil || pc.ID != tc.want):
			t.Errorf("%s %s: %v %v, want %d", tc.class, tc.ts, pc, err, tc.want)
		}
	}
}
