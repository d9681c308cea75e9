package scan

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// headLen is how many bytes of a peer's first answer are kept to classify
// it (never more: the answer of a non-DICOM service is not recorded).
const headLen = 256

// recConn remembers the first bytes read from a connection.
type recConn struct {
	net.Conn
	mu   sync.Mutex
	head []byte
	n    int64
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if room := headLen - len(c.head); room > 0 && n > 0 {
		c.head = append(c.head, p[:min(n, room)]...)
	}
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *recConn) snapshot() ([]byte, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.head...), c.n
}

// dialer opens one transport connection to the endpoint (plain or TLS).
type dialer func(ctx context.Context) (net.Conn, error)

// outcome is how a peer answered an A-ASSOCIATE-RQ.
type outcome struct {
	a   *assoc.Association // accepted
	rj  *assoc.RejectError
	ab  *assoc.AbortError
	err error
	// connected: the TCP (and TLS) connection was made.
	connected bool
	head      []byte
	nbytes    int64
}

func (o *outcome) dicom() bool { return o.a != nil || o.rj != nil || o.ab != nil }

func (o *outcome) received() string {
	switch {
	case o.a != nil:
		ac := o.a.Accept()
		return fmt.Sprintf("A-ASSOCIATE-AC (implementation class UID %q, version name %q)", ac.UserInfo.ImplementationClassUID, ac.UserInfo.ImplementationVersionName)
	case o.rj != nil:
		return "A-ASSOCIATE-RJ: " + o.rj.RJ.String()
	case o.ab != nil:
		return "A-ABORT: " + o.ab.Abort.String()
	}
	return describeNonDICOM(o)
}

// silent: connected, and nothing came back before the timeout (the
// association layer reports ErrTimeout when ARTIM ends its wait).
func (o *outcome) silent() bool {
	return o.connected && o.a == nil && len(o.head) == 0 && (errors.Is(o.err, assoc.ErrTimeout) || errors.Is(o.err, context.DeadlineExceeded))
}

func describeNonDICOM(o *outcome) string {
	switch {
	case len(o.head) == 0 && o.silent():
		return "no answer (connection accepted, nothing received before the timeout)"
	case len(o.head) == 0:
		return "connection closed without an answer"
	case bytes.HasPrefix(o.head, []byte("HTTP/")):
		return "an HTTP response"
	case o.head[0] == 0x15 || o.head[0] == 0x16:
		return "a TLS record"
	case o.head[0] == pdu.TypeAssociateAC || o.head[0] == pdu.TypeAssociateRJ || o.head[0] == pdu.TypeAbort:
		return fmt.Sprintf("a malformed or oversized upper-layer PDU (type 0x%02x, %d bytes read before giving up: %v)", o.head[0], o.nbytes, o.err)
	}
	return fmt.Sprintf("%d bytes that are not a DICOM upper-layer PDU (first byte 0x%02x)", o.nbytes, o.head[0])
}

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// randomAE returns a random 14-character AE title no archive registers.
func randomAE() string {
	return "W" + randomString(13, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
}

// randomUID returns a UUID-derived UID (2.25 arc) that matches nothing.
func randomUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "2.25." + new(big.Int).SetBytes(b).String()
}

var nativeTS = []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}

func (s *scanner) assocConfig(calling string) assoc.Config {
	return assoc.Config{
		AETitle:                   calling,
		ARTIMTimeout:              s.opt.Timeout,
		IdleTimeout:               s.opt.Timeout,
		ImplementationClassUID:    dicom.ImplementationClassUID,
		ImplementationVersionName: dicom.ImplementationVersionName,
	}
}

// associate sends one A-ASSOCIATE-RQ over a new connection and classifies
// the answer.
func (s *scanner) associate(ctx context.Context, dial dialer, calling, called string, pcs []pdu.PresentationContext, id *pdu.UserIdentity) *outcome {
	conn, err := dial(ctx)
	if err != nil {
		return &outcome{err: err}
	}
	rc := &recConn{Conn: conn}
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: called, CallingAETitle: calling, ApplicationContext: pdu.ApplicationContextName, Contexts: pcs}
	rq.UserInfo.UserIdentity = id
	actx, cancel := context.WithTimeout(ctx, s.opt.Timeout+time.Second)
	defer cancel()
	a, err := assoc.Request(actx, rc, s.assocConfig(calling), rq)
	o := &outcome{a: a, err: err, connected: true}
	if err != nil {
		_ = conn.Close()
		o.a = nil
		errors.As(err, &o.rj)
		errors.As(err, &o.ab)
	}
	o.head, o.nbytes = rc.snapshot()
	return o
}

// release ends an accepted association: A-RELEASE, or A-ABORT when the
// peer does not answer in time.
func (s *scanner) release(a *assoc.Association) {
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Release() }()
	select {
	case <-done:
	case <-time.After(s.opt.Timeout):
		a.Abort()
		<-done
	}
}

func verificationOnly() []pdu.PresentationContext {
	return []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: nativeTS}}
}

func rqText(calling, called, what string) string {
	return fmt.Sprintf("A-ASSOCIATE-RQ calling AE %q, called AE %q, proposing %s", calling, called, what)
}

// probeDICOM runs the DICOM checks on an endpoint already known to answer
// o (the first association attempt, with random titles). tlsUsed tells
// whether dial wraps TLS.
func (s *scanner) probeDICOM(ctx context.Context, ep Endpoint, dial dialer, o *outcome, calling, called string, tlsUsed bool, r *result) {
	proto := "dicom"
	if tlsUsed {
		proto = "dicom-tls"
	}
	r.svc.Protocol = proto
	sent := rqText(calling, called, "Verification only")
	r.add(newFinding(IDService, ep, Evidence{Sent: sent, Received: o.received()}))

	aet := ""
	switch {
	case o.a != nil:
		s.identify(ep, o.a, sent, r)
		s.release(o.a)
		aet = called
		r.add(newFinding(IDAnyAEAccepted, ep, Evidence{Sent: sent, Received: o.received() + "; released at once"}))
		if !tlsUsed {
			r.add(newFinding(IDNoTLS, ep, Evidence{Sent: sent + " over plain TCP", Received: "A-ASSOCIATE-AC"}))
		}
	case o.rj != nil:
		r.note("random AE titles rejected: %s", o.rj.RJ.String())
		if s.opt.DiscoverAET {
			aet = s.discover(ctx, ep, dial, o.rj.RJ, tlsUsed, r)
		}
	case o.ab != nil:
		r.note("random AE titles answered with A-ABORT: %s", o.ab.Abort.String())
	}
	if aet == "" || ctx.Err() != nil {
		return
	}
	r.svc.CalledAETitle = aet
	s.checkIdentity(ctx, ep, dial, aet, r)
	s.checkServices(ctx, ep, dial, aet, r)
}

// identify records the implementation and checks the CVE table.
func (s *scanner) identify(ep Endpoint, a *assoc.Association, sent string, r *result) {
	ui := a.Accept().UserInfo
	r.svc.ImplementationClassUID = ui.ImplementationClassUID
	r.svc.ImplementationVersionName = ui.ImplementationVersionName
	prod, ver, ok := Product(ui.ImplementationVersionName)
	if prod != "" && r.svc.Product == "" {
		r.svc.Product = prod
	}
	if !ok {
		return
	}
	if r.svc.Version == "" {
		r.svc.Version = versionString(ver)
	}
	if f, ok := vulnFinding(ep, prod, ver, sent, fmt.Sprintf("A-ASSOCIATE-AC implementation version name %q", ui.ImplementationVersionName)); ok {
		r.add(f)
	}
}

// discover tries CommonAETitles after a rejection; it returns the title to
// use for further checks when one was accepted.
func (s *scanner) discover(ctx context.Context, ep Endpoint, dial dialer, first pdu.AssociateRJ, tlsUsed bool, r *result) string {
	calling := randomAE()
	for _, title := range CommonAETitles {
		if ctx.Err() != nil {
			return ""
		}
		o := s.associate(ctx, dial, calling, title, verificationOnly(), nil)
		sent := rqText(calling, title, "Verification only")
		switch {
		case o.a != nil:
			s.identify(ep, o.a, sent, r)
			s.release(o.a)
			r.add(newFinding(IDCalledAEDiscovered, ep, Evidence{Sent: sent, Received: "A-ASSOCIATE-AC (after " + first.String() + " for a random called AE title)"}))
			if !tlsUsed {
				r.add(newFinding(IDNoTLS, ep, Evidence{Sent: sent + " over plain TCP", Received: "A-ASSOCIATE-AC"}))
			}
			return title
		case o.rj != nil && o.rj.RJ.Result == pdu.RejectTransient && first.Result != pdu.RejectTransient:
			// Throttled (too many associations, or locked out after the
			// refusals so far): that says nothing about the title.
			r.note("called-AE discovery stopped at %q: the peer now refuses transiently (%s), as a lockout of repeated refusals does", title, o.rj.RJ.String())
			return ""
		case o.rj != nil && o.rj.RJ != first:
			r.add(newFinding(IDCalledAEDiscovered, ep, Evidence{Sent: sent, Received: fmt.Sprintf("A-ASSOCIATE-RJ %s, where a random called AE title got %s", o.rj.RJ.String(), first.String())}))
			r.note("called AE title %q recognised, but the calling AE title was refused", title)
			return ""
		case !o.dicom():
			r.note("called-AE discovery stopped: %s", o.received())
			return ""
		}
	}
	r.note("called-AE discovery: none of %d common titles changed the answer (%s)", len(CommonAETitles), first.String())
	return ""
}

// checkIdentity proposes a bogus username and passcode with a positive
// response requested.
func (s *scanner) checkIdentity(ctx context.Context, ep Endpoint, dial dialer, called string, r *result) {
	calling := randomAE()
	id := &pdu.UserIdentity{Type: pdu.IdentityUsernamePasscode, PositiveResponse: true, Primary: []byte("ward-scan-" + randomString(8, "abcdefghijklmnopqrstuvwxyz")), Secondary: []byte(randomString(24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))}
	o := s.associate(ctx, dial, calling, called, verificationOnly(), id)
	sent := rqText(calling, called, "Verification only") + ", user identity: random username and passcode, positive response requested"
	if o.a == nil {
		if o.dicom() {
			r.note("bogus user identity refused: %s", o.received())
		}
		return
	}
	ac := o.a.Accept()
	s.release(o.a)
	got := "A-ASSOCIATE-AC without a user identity server response (identity ignored)"
	if ac.UserInfo.HasIdentityResponse {
		got = fmt.Sprintf("A-ASSOCIATE-AC with a user identity server response (%d bytes, not kept)", len(ac.UserInfo.UserIdentityResponse))
	}
	r.add(newFinding(IDUserIdentityNotForced, ep, Evidence{Sent: sent, Received: got}))
}

// probeStorage are the storage SOP classes proposed to test C-STORE
// acceptance: the most common modalities.
var probeStorage = []string{
	"1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture Image Storage
	"1.2.840.10008.5.1.4.1.1.2",     // CT Image Storage
	"1.2.840.10008.5.1.4.1.1.4",     // MR Image Storage
	"1.2.840.10008.5.1.4.1.1.1",     // Computed Radiography Image Storage
	"1.2.840.10008.5.1.4.1.1.1.1",   // Digital X-Ray Image Storage - For Presentation
	"1.2.840.10008.5.1.4.1.1.6.1",   // Ultrasound Image Storage
	"1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF Storage
}

const (
	pcFind  byte = 3
	pcMove  byte = 5
	pcGet   byte = 7
	pcStore byte = 9 // and following odd IDs
)

// checkServices proposes the Q/R and storage contexts in one association,
// runs the counting C-FIND on it, then tests C-MOVE on another.
func (s *scanner) checkServices(ctx context.Context, ep Endpoint, dial dialer, called string, r *result) {
	calling := randomAE()
	pcs := []pdu.PresentationContext{
		{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: nativeTS},
		{ID: pcFind, AbstractSyntax: dimse.StudyRootFind, TransferSyntaxes: nativeTS},
		{ID: pcMove, AbstractSyntax: dimse.StudyRootMove, TransferSyntaxes: nativeTS},
		{ID: pcGet, AbstractSyntax: dimse.StudyRootGet, TransferSyntaxes: nativeTS},
	}
	for i, c := range probeStorage {
		pcs = append(pcs, pdu.PresentationContext{ID: pcStore + byte(2*i), AbstractSyntax: c, TransferSyntaxes: nativeTS})
	}
	o := s.associate(ctx, dial, calling, called, pcs, nil)
	sent := rqText(calling, called, "Verification, Study Root FIND/MOVE/GET and "+fmt.Sprint(len(probeStorage))+" storage SOP classes")
	if o.a == nil {
		r.note("service association refused: %s", o.received())
		return
	}
	a := o.a
	var stores []string
	for _, c := range a.Contexts() {
		if c.ID >= pcStore {
			stores = append(stores, dicom.UIDName(c.AbstractSyntax))
		}
	}
	_, getOK := a.Context(pcGet)
	_, moveOK := a.Context(pcMove)
	if len(stores) > 0 {
		r.add(newFinding(IDCStoreOpen, ep, Evidence{Sent: sent + "; nothing stored", Received: fmt.Sprintf("storage contexts accepted for %d of %d classes: %s", len(stores), len(probeStorage), strings.Join(sortedUnique(stores), ", "))}))
	}
	if getOK {
		r.add(newFinding(IDCGetOffered, ep, Evidence{Sent: sent + "; no C-GET sent", Received: "presentation context for Study Root Query/Retrieve - GET accepted"}))
	}
	if pc, ok := a.Context(pcFind); ok {
		s.countFind(ctx, ep, a, pc, sent, r)
	} else {
		s.release(a)
		r.note("Study Root C-FIND context not accepted")
	}
	if moveOK && ctx.Err() == nil {
		s.checkMove(ctx, ep, dial, called, r)
	}
}

// findDrain is how many responses a peer may still send after our
// C-CANCEL before the association is aborted.
const findDrain = 1000

// countFind sends a STUDY-level C-FIND asking only for StudyInstanceUID
// and counts the pending responses, discarding their data sets unread; it
// cancels at the cap. The association ends (released or aborted) on
// return.
func (s *scanner) countFind(ctx context.Context, ep Endpoint, a *assoc.Association, pc *assoc.Context, sent string, r *result) {
	stop := context.AfterFunc(ctx, a.Abort)
	defer stop()
	cl := dimse.NewClient(a)
	defer cl.Close()
	sentFind := "C-FIND-RQ Study Root, QueryRetrieveLevel STUDY, return key StudyInstanceUID only (over " + sent + ")"
	ts := dicom.LookupTransferSyntax(pc.TransferSyntax)
	id := &dicom.DataSet{}
	id.Set(dicom.QueryRetrieveLevel, "STUDY")
	id.Put(&dicom.Element{Tag: dicom.StudyInstanceUID, VR: "UI"})
	b, err := id.Bytes(ts)
	if err != nil {
		a.Abort()
		r.note("encoding the C-FIND identifier: %v", err)
		return
	}
	const msgID = 1
	if err := cl.WriteMessage(pc.ID, &dimse.Command{CommandField: dimse.CFindRQ, MessageID: msgID, AffectedSOPClassUID: pc.AbstractSyntax, Priority: dimse.PriorityMedium}, bytes.NewReader(b)); err != nil {
		a.Abort()
		r.note("sending C-FIND: %v", err)
		return
	}
	var n, after int64
	capReached := false
	fail := func(format string, args ...any) {
		a.Abort()
		r.note("C-FIND abandoned after %d responses: %s", n, fmt.Sprintf(format, args...))
		if n > 0 {
			r.add(newFinding(IDCFindOpen, ep, Evidence{Sent: sentFind, Received: fmt.Sprintf("%d pending responses (data sets discarded unread), then the exchange was abandoned", n), Count: count(n), CapReached: capReached}))
		}
	}
	for {
		m, err := cl.ReadMessage()
		if err != nil {
			fail("%v", err)
			return
		}
		if m.Data != nil {
			// Dropped on arrival: an identifier is never decoded or kept.
			if _, err := io.Copy(io.Discard, m.Data); err != nil {
				fail("%v", err)
				return
			}
		}
		c := m.Command
		if c.CommandField != dimse.CFindRSP || c.MessageIDBeingRespondedTo != msgID {
			fail("unexpected %s", dimse.CommandName(c.CommandField))
			return
		}
		if dimse.CategoryOf(c.Status) == dimse.CategoryPending {
			if capReached {
				if after++; after > findDrain {
					fail("%d responses more after C-CANCEL", findDrain)
					return
				}
				continue
			}
			n++
			if n >= int64(s.opt.FindCap) {
				capReached = true
				if err := cl.WriteMessage(pc.ID, &dimse.Command{CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: msgID}, nil); err != nil {
					fail("sending C-CANCEL: %v", err)
					return
				}
			}
			continue
		}
		s.release(a)
		status := fmt.Sprintf("0x%04X", c.Status)
		got := fmt.Sprintf("%d pending responses (data sets discarded unread), final status %s (%s)", n, status, dimse.StatusName(c.Status))
		if capReached {
			got += fmt.Sprintf("; C-CANCEL sent at the cap of %d", s.opt.FindCap)
		}
		cat := dimse.CategoryOf(c.Status)
		if n > 0 || cat == dimse.CategorySuccess || cat == dimse.CategoryWarning || cat == dimse.CategoryCancel {
			r.add(newFinding(IDCFindOpen, ep, Evidence{Sent: sentFind, Received: got, Count: count(n), CapReached: capReached, Status: status}))
		} else {
			r.note("C-FIND refused: %s", got)
		}
		return
	}
}

// checkMove sends C-MOVE of a random Study Instance UID to a random
// destination: a careful archive answers A801 (destination unknown).
func (s *scanner) checkMove(ctx context.Context, ep Endpoint, dial dialer, called string, r *result) {
	calling := randomAE()
	o := s.associate(ctx, dial, calling, called, []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.StudyRootMove, TransferSyntaxes: nativeTS}}, nil)
	if o.a == nil {
		r.note("C-MOVE association refused: %s", o.received())
		return
	}
	a := o.a
	mctx, cancel := context.WithTimeout(ctx, 5*s.opt.Timeout)
	defer cancel()
	stop := context.AfterFunc(mctx, a.Abort)
	defer stop()
	dest := randomAE()
	id := &dicom.DataSet{}
	id.Set(dicom.QueryRetrieveLevel, "STUDY")
	id.Set(dicom.StudyInstanceUID, randomUID())
	cl := dimse.NewClient(a)
	defer cl.Close()
	sent := fmt.Sprintf("C-MOVE-RQ Study Root to random destination %q for a random Study Instance UID that matches nothing (calling AE %q)", dest, calling)
	res, err := cl.Move(mctx, 1, dest, id, nil)
	if err != nil {
		a.Abort()
		r.add(newFinding(IDCMoveOffered, ep, Evidence{Sent: sent, Received: "context accepted; C-MOVE exchange failed: " + err.Error()}))
		return
	}
	s.release(a)
	st := res.Final.Status
	f := newFinding(IDCMoveOffered, ep, Evidence{Sent: sent, Received: fmt.Sprintf("context accepted; final status 0x%04X (%s)", st, dimse.StatusName(st)), Status: fmt.Sprintf("0x%04X", st)})
	if st == dimse.StatusMoveDestinationUnknown {
		f.Severity = Medium
		f.Evidence.Received += ": unknown destinations are refused"
	}
	r.add(f)
}

// tlsDialer wraps dial in a TLS client. Certificates are not verified:
// the auditor only learns whether TLS is spoken, and sends no secret.
func (s *scanner) tlsDialer(plain dialer, ep Endpoint) dialer {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := plain(ctx)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: ep.Name, MinVersion: tls.VersionTLS10}) //nolint:gosec // an auditor observes, it does not trust
		hctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		return tc, nil
	}
}
