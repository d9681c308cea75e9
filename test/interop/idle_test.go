package interop

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimse/dimsetest"
	"github.com/ward-pacs/ward/network/pdu"
)

// slowStorer answers each C-STORE only after a delay, like a destination
// writing to a slow disk.
type slowStorer struct {
	dimse.Storer
	delay time.Duration
}

func (s slowStorer) Store(ctx context.Context, r *dimse.StoreRequest) error {
	err := s.Storer.Store(ctx, r)
	time.Sleep(s.delay)
	return err
}

// TestRegressionLongMoveNotIdle: movescu asks `ward serve` (idle_timeout
// 2 s) to move 4 objects to a destination that takes 0.9 s per object.
// The idle timer ran while Ward worked for the requestor, and the move was
// aborted after idle_timeout (issue 14, item 9); it now completes. An
// association that is genuinely idle is still aborted at idle_timeout.
func TestRegressionLongMoveNotIdle(t *testing.T) {
	requireTool(t, "movescu", "storescu")
	requirePydicom(t)
	const idle = 2 * time.Second
	dest := &dimsetest.Archive{}
	srv, err := dimsetest.Start(dest, dimsetest.Options{AETitle: "SLOWDEST", Dispatcher: func(d *dimse.Dispatcher) {
		d.Handlers.Store = slowStorer{Storer: d.Handlers.Store, delay: 900 * time.Millisecond}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	_, dport, _ := net.SplitHostPort(srv.Addr)
	port, _ := strconv.Atoi(dport)
	w := startWard(t, func(c *config.Config) {
		c.DICOM.IdleTimeout = config.Duration{Duration: idle}
		c.Peers = []config.Peer{{AETitle: "SLOWDEST", Host: "127.0.0.1", Port: port, Allow: []string{config.MoveDestination}}}
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
	start := time.Now()
	out, err := dcmtk("movescu", "-v", "-P", "-aec", "WARD", "-aem", "SLOWDEST", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P2", w.host, w.port).CombinedOutput()
	took := time.Since(start)
	if err != nil || strings.Contains(string(out), "E: ") || !strings.Contains(string(out), "Final Move Response (Success)") {
		t.Fatalf("movescu (%s): %v\n%s", took.Round(time.Millisecond), err, out)
	}
	if got, want := len(dest.Objects()), len(uidsOf(a, "P2")); got != want {
		t.Fatalf("the destination received %d objects, want %d", got, want)
	}
	if took < idle {
		t.Fatalf("the move took %s, not longer than idle_timeout %s: the test proves nothing", took, idle)
	}

	// A silent association is aborted once idle_timeout has passed.
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "SILENT", ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}}}}
	silent, err := assoc.Dial(context.Background(), "tcp", w.addr, assoc.Config{AETitle: "SILENT", IdleTimeout: -1}, rq)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	select {
	case <-silent.Done():
	case <-time.After(idle + 10*time.Second):
		silent.Abort()
		t.Fatal("a silent association was not aborted")
	}
	var ab *assoc.AbortError
	if took := time.Since(start); took < idle-100*time.Millisecond || !errors.As(silent.Err(), &ab) {
		t.Fatalf("silent association ended after %s with %v, want an A-ABORT after %s", took, silent.Err(), idle)
	}
}
