package dimse_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
	"github.com/ward-pacs/ward/network/pdu"
)

const shortIdle = 300 * time.Millisecond

type slowStore struct {
	dimse.Storer
	delay time.Duration
}

func (s slowStore) Store(ctx context.Context, r *dimse.StoreRequest) error {
	err := s.Storer.Store(ctx, r)
	time.Sleep(s.delay)
	return err
}

// TestRegressionIdleTimerWaitsForWork: with a short idle timeout, work
// that Ward does for the peer without sending anything for longer than the
// timeout (a C-FIND whose first match takes long, a received object slow
// to write) is not cut off (issue 14, item 9), while a peer that leaves a
// C-GET sub-operation unanswered is still aborted at the idle timeout.
func TestRegressionIdleTimerWaitsForWork(t *testing.T) {
	a := &dimsetest.Archive{FindDelay: 3 * shortIdle}
	a.Add(corpus()...)
	addr := startArchive(t, a, dimsetest.Options{IdleTimeout: shortIdle, Dispatcher: func(d *dimse.Dispatcher) {
		d.Handlers.Store = slowStore{Storer: d.Handlers.Store, delay: 3 * shortIdle}
	}})

	t.Run("slow find", func(t *testing.T) {
		cl := qrAssoc(t, addr)
		n := 0
		rsp, err := cl.Find(context.Background(), 1, ident("STUDY", "PatientID", "P2", "StudyInstanceUID", ""), func(*dicom.DataSet) error { n++; return nil })
		if err != nil || rsp.Status != dimse.StatusSuccess || n != 2 {
			t.Fatalf("find: %v, %d matches", err, n)
		}
	})

	t.Run("slow store", func(t *testing.T) {
		o := dimsetest.NewObject(map[string]string{"PatientID": "P9", "StudyInstanceUID": "1.2.9", "SOPInstanceUID": "1.2.9.1"}, dicom.ExplicitVRLittleEndian, "")
		rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "STORE", ApplicationContext: pdu.ApplicationContextName,
			Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: o.SOPClassUID, TransferSyntaxes: []string{o.TransferSyntaxUID}}}}
		as, err := assoc.Dial(context.Background(), "tcp", addr, assoc.Config{AETitle: "STORE"}, rq)
		if err != nil {
			t.Fatal(err)
		}
		cl := dimse.NewClient(as)
		for i := 0; i < 2; i++ {
			rsp, err := cl.Store(context.Background(), 1, o.SOPClassUID, o.SOPInstanceUID, bytes.NewReader(o.Data))
			if err != nil || rsp.Status != dimse.StatusSuccess {
				t.Fatalf("store %d: %v", i, err)
			}
		}
		if err := as.Release(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unanswered C-GET sub-operation", func(t *testing.T) {
		cl := qrAssoc(t, addr, pdu.PresentationContext{ID: 11, AbstractSyntax: dimsetest.CTImageStorage, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID}})
		start := time.Now()
		_, err := cl.Get(context.Background(), 7, ident("PATIENT", "PatientID", "P1"), silentStorer{}, nil)
		var ab *assoc.AbortError
		if !errors.As(err, &ab) {
			t.Fatalf("C-GET with an unanswered sub-operation: %v, want an A-ABORT", err)
		}
		if took := time.Since(start); took > silentFor {
			t.Fatalf("aborted after %s", took)
		}
	})
}

const silentFor = 20 * shortIdle

// silentStorer does not answer in time: the C-GET SCU keeps Ward waiting.
type silentStorer struct{}

func (silentStorer) Store(ctx context.Context, r *dimse.StoreRequest) error {
	select {
	case <-time.After(silentFor):
	case <-ctx.Done():
	case <-r.Assoc.Done(): // Ward aborted
	}
	return errors.New("too late")
}
