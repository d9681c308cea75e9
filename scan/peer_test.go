package scan

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// All peers in these tests listen on 127.0.0.1 and every scan targets
// 127.0.0.1 only.

// listen runs handle for each connection on a loopback port until the test
// ends, and returns the port.
func listen(t *testing.T, handle func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); handle(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// anyAE accepts whatever called AE title is given (as exposed archives do).
type anyAE struct{ *assoc.Acceptor }

func (n anyAE) Negotiate(rq *pdu.AssociateRQ, remote net.Addr) (*pdu.AssociateAC, *pdu.AssociateRJ) {
	c := *rq
	c.CalledAETitle = n.AETitle
	ac, rj := n.Acceptor.Negotiate(&c, remote)
	if ac != nil {
		ac.CalledAETitle = rq.CalledAETitle
	}
	return ac, rj
}

type fakePeer struct {
	anyAE      bool
	versionRaw string
	handlers   dimse.Handlers
	store      bool
}

var native = []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}

// serveDICOM runs a scripted DICOM archive with Ward's own acceptor and
// dispatcher.
func serveDICOM(t *testing.T, p fakePeer) int {
	t.Helper()
	acc := &assoc.Acceptor{
		AETitle: "ARCHIVE",
		TransferSyntaxes: func(rq *pdu.AssociateRQ, remote net.Addr, abstract string) ([]string, func(string) bool, bool) {
			switch {
			case abstract == dimse.VerificationSOPClass:
				return native, nil, true
			case abstract == dimse.StudyRootFind && p.handlers.Find != nil:
				return native, nil, true
			case (abstract == dimse.StudyRootMove || abstract == dimse.StudyRootGet) && p.handlers.Retrieve != nil:
				return native, nil, true
			case dicom.IsStorageSOPClass(abstract) && p.store:
				return native, nil, true
			}
			return nil, nil, false
		},
		ImplementationClassUID:    "1.2.3.4",
		ImplementationVersionName: p.versionRaw,
	}
	var neg assoc.Negotiator = acc
	if p.anyAE {
		neg = anyAE{acc}
	}
	if p.handlers.Echo == nil {
		p.handlers.Echo = echoOK{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return listen(t, func(c net.Conn) {
		a, err := assoc.Serve(c, assoc.Config{AETitle: "ARCHIVE", ARTIMTimeout: 5 * time.Second}, neg)
		if err != nil {
			return
		}
		_ = (&dimse.Dispatcher{Handlers: p.handlers}).Serve(ctx, a)
	})
}

type echoOK struct{}

func (echoOK) Echo(context.Context, *dimse.Request) error { return nil }

// studies answers C-FIND with n matches; endless ignores C-CANCEL and
// answers until the association ends.
type studies struct {
	n       int
	endless bool
}

func (s studies) Find(ctx context.Context, r *dimse.FindRequest, emit func(*dicom.DataSet) error) error {
	for i := 0; s.endless || i < s.n; i++ {
		ds := &dicom.DataSet{}
		ds.Set(dicom.QueryRetrieveLevel, "STUDY")
		ds.Set(dicom.StudyInstanceUID, "1.2.3."+strconv.Itoa(i+1))
		ds.Set(dicom.PatientName, "SECRET^PATIENT")
		if err := emit(ds); err != nil {
			return err
		}
		if !s.endless && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

type noDestinations struct{}

func (noDestinations) Retrieve(context.Context, *dimse.RetrieveRequest) ([]dimse.Instance, error) {
	return nil, nil
}

func (noDestinations) Destination(context.Context, *dimse.RetrieveRequest) (string, error) {
	return "", dimse.ErrUnknownDestination
}

// scanPort scans 127.0.0.1:port with short timeouts.
func scanPort(t *testing.T, port int, opt Options) *Report {
	t.Helper()
	if opt.Timeout == 0 {
		opt.Timeout = 700 * time.Millisecond
	}
	if opt.Deadline == 0 {
		opt.Deadline = 30 * time.Second
	}
	sp, err := ParseSpec("127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	if !sp.Prefix.Addr().IsLoopback() {
		t.Fatal("tests scan loopback only")
	}
	rep, err := Run(context.Background(), Scope{Targets: []Spec{sp}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func ids(r *Report) map[string]Finding {
	m := map[string]Finding{}
	for _, f := range r.Findings {
		m[f.ID] = f
	}
	return m
}

var _ = netip.Addr{}

func dimseHandlers(f dimse.Finder, retrieve bool) dimse.Handlers {
	h := dimse.Handlers{Find: f}
	if retrieve {
		h.Retrieve = noDestinations{}
	}
	return h
}
