package dimse_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
	"github.com/ward-pacs/ward/network/pdu"
)

// TestStoreRefusesBadSOPInstanceUID: a C-STORE whose Affected SOP Instance
// UID could name a path or is no UID gets 0117 (Invalid SOP Instance) with
// the offending element, before the Storer sees it; the association goes
// on (issue 14, item 13).
func TestStoreRefusesBadSOPInstanceUID(t *testing.T) {
	const ct = "1.2.840.10008.5.1.4.1.1.2"
	ar := &dimsetest.Archive{}
	rf := &refusals{Archive: ar}
	srv, err := dimsetest.Start(ar, dimsetest.Options{Dispatcher: rf.handlers})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "TEST",
		ApplicationContext: pdu.ApplicationContextName,
		Contexts:           []pdu.PresentationContext{{ID: 1, AbstractSyntax: ct, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID}}}}
	a, err := assoc.Dial(context.Background(), "tcp", srv.Addr, assoc.Config{AETitle: "TEST"}, rq)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	cl := dimse.NewClient(a)
	body := func(uid string) []byte {
		ds := &dicom.DataSet{}
		ds.Set(dicom.SOPClassUID, ct)
		ds.Set(dicom.SOPInstanceUID, uid)
		b, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, uid := range []string{"..", ".", "1.2/../3", "1.2." + string(bytes.Repeat([]byte("9"), 61)), "1.2\x1b3"} {
		rsp, err := cl.Store(context.Background(), 1, ct, uid, bytes.NewReader(body("1.2.3")))
		if err != nil {
			t.Fatalf("%q: %v", uid, err)
		}
		if rsp.Status != dimse.StatusInvalidSOPInstance || len(rsp.OffendingElement) != 1 || rsp.OffendingElement[0] != 0x00001000 || rsp.ErrorComment == "" {
			t.Errorf("%q: status 0x%04X, offending %x, comment %q; want 0x0117 naming (0000,1000)", uid, rsp.Status, rsp.OffendingElement, rsp.ErrorComment)
		}
		if ar.Get(uid) != nil {
			t.Errorf("%q reached the storer", uid)
		}
		// The Storer is told of the refusal (the audit trail counts it).
		if got := rf.take(); len(got) != 1 || got[0].Command.AffectedSOPInstanceUID != uid || got[0].Status.Status != dimse.StatusInvalidSOPInstance {
			t.Errorf("%q: refusals told %+v", uid, got)
		}
	}
	rsp, err := cl.Store(context.Background(), 1, ct, "1.2.3", bytes.NewReader(body("1.2.3")))
	if err != nil || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("a good UID after the refusals: %v, %+v", err, rsp)
	}
	if got := rf.take(); len(got) != 0 {
		t.Errorf("a stored object told as refused: %+v", got)
	}
}
