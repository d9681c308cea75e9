package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
)

// The audit trail (PS3.15 A.5): what the server records and when.
//
//   - Application Activity (110100) when Serve starts and stops.
//   - User Authentication (110114, Login) for every association request
//     that reached negotiation: success when accepted, minor failure with
//     the A-ASSOCIATE-RJ when rejected.
//   - Security Alert (110113, Node Authentication) when the rejection names
//     the called or calling AE title, and for lockouts.
//   - What requestors do with patient data (queries, stores, retrieves,
//     refusals of them) is recorded around the archive's service, once
//     for every front end (audited.go). A DIMSE association is one session
//     there: its stored instances are one record when it ends.
//
// Records go to audit.Log, whose own goroutine appends and fsyncs them in
// batches: no DIMSE exchange waits on the audit log's disk.
//
// While the log cannot be written (audit.Log.Err: a full disk, an I/O
// error), and unless [audit] on_failure = "continue", the services that
// touch patient data are refused (auditGate below): C-STORE and C-FIND with
// A700 (Refused: Out of Resources), C-MOVE and C-GET with A701, each with
// a comment saying why. C-ECHO is answered. Service resumes by itself once
// the log's writer has written again (it retries every second).

// openAudit opens the audit log when the configuration enables it.
func (s *Server) openAudit() error {
	if !s.Config.AuditEnabled() {
		s.Logger.Warn("audit trail disabled ([audit] enabled = false): associations, queries and transfers are not recorded")
		return nil
	}
	a := s.Config.Audit
	if a.Syslog == "" {
		s.Logger.Info("audit records are kept in the local log only ([audit] syslog is empty)")
	}
	l, err := audit.Open(s.Config.AuditDir(), s.Logger, audit.WithForward(audit.ForwardConfig{
		Addr: a.Syslog, CA: a.SyslogCA, Cert: a.SyslogCert, Key: a.SyslogKey, QueueMax: a.SyslogQueueMax,
		Checkpoints: s.Config.AuditCheckpoints(), Node: s.node,
	}), audit.WithKeyFile(s.Config.AuditKeyFile()), audit.WithSource(audit.Node{AETitle: s.Config.AETitle, ID: s.node}))
	if err != nil {
		return err
	}
	s.audit = l
	return nil
}

func (s *Server) closeAudit() {
	if s.audit == nil {
		return
	}
	if err := s.audit.Close(); err != nil {
		s.Logger.Error("closing the audit log", "err", err.Error())
	}
	s.audit = nil
}

func (s *Server) record(m *audit.Message) {
	if s.audit == nil {
		return
	}
	if err := s.audit.Write(m); err != nil {
		s.Logger.Error("audit record lost", "event", m.Name(), "err", err.Error())
	}
}

// wardNode is Ward as an audit participant.
func (s *Server) wardNode() audit.Node {
	n := audit.Node{AETitle: s.Config.AETitle, ID: s.node}
	if s.ln != nil {
		n.Addr = hostOf(s.ln.Addr())
	}
	return n
}

// hostOf is the host of a network address, "" for none.
func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	return addrHost(a.String())
}

// afterNegotiation acts on an association's establishment: the lockout
// counts refusals per source address, the log and the audit trail record
// the outcome. cs.rq is nil when no request was negotiated (the peer went
// away or sent garbage first): nothing is recorded then.
func (s *Server) afterNegotiation(cs *connSession, remote net.Addr, err error) {
	rq := cs.rq
	now := time.Now()
	src := remoteAddr(cs.conn)
	if rq == nil {
		if errors.Is(err, pdu.ErrMalformed) || errors.Is(err, pdu.ErrUnknownType) || errors.Is(err, pdu.ErrTooLong) {
			// An invalid PDU where the A-ASSOCIATE-RQ was due (answered
			// with A-ABORT): refused like an association request that
			// breaks the rules. A silent connection or one closed before
			// a request is not recorded (ARTIM closes it).
			reason := "invalid PDU instead of an A-ASSOCIATE-RQ: " + pduProblem(err)
			s.mx.association(assocRejected)
			peer := audit.Node{Addr: hostOf(remote)}
			s.Logger.Warn("association refused", "remote", remote.String(), "reason", reason)
			s.record(audit.Authentication(s.wardNode(), peer, false, reason, now))
			s.record(audit.SecurityAlert(s.wardNode(), peer, reason, now))
			if src.IsValid() {
				s.lockoutOnFailure(src, now)
			}
		}
		return
	}
	peer := audit.Node{AETitle: strings.TrimSpace(rq.CallingAETitle), Addr: hostOf(remote)}
	if err == nil {
		s.mx.association(assocAccepted)
		s.limits.Succeeded(src, failKey(rq))
		if cs.grant != nil {
			peer.ID = cs.grant.User
		}
		s.record(audit.Authentication(s.wardNode(), peer, true, "", now))
		if len(cs.refusedContexts) > 0 {
			var parts []string
			for _, svc := range slices.Sorted(maps.Keys(cs.refusedContexts)) {
				parts = append(parts, fmt.Sprintf("%s (%d)", svc, cs.refusedContexts[svc]))
			}
			reason := "presentation contexts refused for want of a permission: " + strings.Join(parts, ", ")
			s.Logger.Warn("association: contexts refused by policy", "remote", remote.String(), "calling", peer.AETitle, "services", strings.Join(parts, ", "))
			s.record(audit.SecurityAlert(s.wardNode(), peer, reason, now))
		}
		return
	}
	s.mx.association(assocRejected)
	reason := err.Error()
	alert := false
	transient := false
	if cs.refusal != nil {
		reason, alert = cs.refusal.Reason, cs.refusal.Alert
		transient = cs.refusal.Transient()
	}
	var rj *assoc.RejectError
	if errors.As(err, &rj) && rj.RJ.Source == pdu.RejectSourceUser && rj.RJ.Reason == pdu.RejectCalledAENotRecognized {
		reason = "called AE title " + strings.TrimSpace(rq.CalledAETitle) + " is not Ward's"
		alert = true
	}
	if cs.refusal != nil || alert {
		s.Logger.Warn("association refused", "remote", remote.String(), "calling", peer.AETitle, "called", strings.TrimSpace(rq.CalledAETitle), "reason", reason)
	}
	s.record(audit.Authentication(s.wardNode(), peer, false, reason, now))
	if alert {
		s.record(audit.SecurityAlert(s.wardNode(), peer, reason, now))
	}
	if cs.refusal != nil && cs.refusal.Counted {
		// A failed identity verification, counted by the policy when its
		// verdict came (so that verifications in parallel saw it).
		s.auditSourceLockout(src, cs.refusal.SourceLocked, now)
	} else if (cs.refusal != nil || alert) && !transient && src.IsValid() {
		s.auditSourceLockout(src, s.limits.FailedAs(src, failKey(rq)), now)
	}
	if cs.refusal != nil && !cs.refusal.AccountLocked.IsZero() {
		s.auditAccountLockout(peer, cs.refusal.Account, cs.refusal.AccountLocked, now)
	}
}

// lockoutOnFailure counts a refused association from src that is not
// attributed to a peer (a failed TLS handshake); when that starts or
// extends a lockout, it is logged and audited.
func (s *Server) lockoutOnFailure(src netip.Addr, now time.Time) {
	s.auditSourceLockout(src, s.limits.Failed(src), now)
}

// auditSourceLockout logs and audits the start or extension of a source's
// lockout (until zero: none).
func (s *Server) auditSourceLockout(src netip.Addr, until, now time.Time) {
	if until.IsZero() {
		return
	}
	msg := fmt.Sprintf("source %s locked out until %s after repeated refused associations", src, until.UTC().Format(time.RFC3339))
	s.Logger.Warn("source locked out", "remote", src.String(), "until", until.UTC().Format(time.RFC3339))
	s.record(audit.SecurityAlert(s.wardNode(), audit.Node{Addr: src.String()}, msg, now))
}

// auditAccountLockout logs and audits the start or extension of an
// account's lockout: its passcode was refused lockout_after times in a
// row, from whatever sources. The user name is the one claimed (it may
// name no user); no patient data is involved.
func (s *Server) auditAccountLockout(peer audit.Node, account string, until, now time.Time) {
	name := policy.ShortName(account)
	msg := fmt.Sprintf("account %q locked out until %s after repeated wrong passcodes (the last from %s as %s)", name, until.UTC().Format(time.RFC3339), peer.Addr, peer.AETitle)
	s.Logger.Warn("account locked out", "user", name, "remote", peer.Addr, "calling", peer.AETitle, "until", until.UTC().Format(time.RFC3339))
	peer.ID = name
	s.record(audit.SecurityAlert(s.wardNode(), peer, msg, now))
}

func addStudy(m map[string]*audit.Study, study, patient, class string) {
	key := study + "\x00" + patient
	st := m[key]
	if st == nil {
		uid := study
		if uid == "" {
			uid = "unknown"
		}
		st = &audit.Study{UID: uid, PatientID: strings.TrimSpace(patient), Classes: map[string]int{}}
		m[key] = st
	}
	st.Classes[class]++
}

func studies(m map[string]*audit.Study) []*audit.Study {
	out := make([]*audit.Study, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	return out
}

// auditDownComment is the Error Comment of a refusal while the audit log
// cannot be written (an LO: 64 characters at most; the log says why).
const auditDownComment = "audit trail cannot be written: service suspended"

// auditProbeWait bounds how long a request waits for the audit log to be
// tried again before it is refused.
const auditProbeWait = time.Second

// auditRefusal is the refusal of a patient-data service while the audit
// log cannot be written and the policy refuses service; nil otherwise.
func (s *Server) auditRefusal() error {
	if s.audit == nil || !s.Config.AuditRefuses() {
		return nil
	}
	// A request that finds the log failing has it tried again at once
	// (bounded: the writer tries at most every 50 ms, and the request
	// waits at most auditProbeWait).
	if s.audit.Err() != nil && s.audit.Probe(auditProbeWait) != nil {
		return archive.Fail(archive.ErrAuditUnavailable, auditDownComment)
	}
	return nil
}

// auditGated puts the audit policy in front of the services that touch
// patient data.
func (s *Server) auditGated(svc archive.Service) archive.Service { return auditGate{s, svc} }

type auditGate struct {
	s   *Server
	svc archive.Service
}

var _ archive.Service = auditGate{}

func (g auditGate) Echo(ctx context.Context) error { return g.svc.Echo(ctx) }

func (g auditGate) Store(ctx context.Context, r *archive.StoreRequest) (*archive.Stored, error) {
	if err := g.s.auditRefusal(); err != nil {
		return nil, err
	}
	return g.svc.Store(ctx, r)
}

func (g auditGate) Query(ctx context.Context, q *archive.Query, emit func(archive.Match) error) error {
	if err := g.s.auditRefusal(); err != nil {
		return err
	}
	return g.svc.Query(ctx, q, emit)
}

func (g auditGate) Retrieve(ctx context.Context, r *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	if err := g.s.auditRefusal(); err != nil {
		return err
	}
	return g.svc.Retrieve(ctx, r, each)
}

func (g auditGate) Destination(ctx context.Context, aeTitle string) (string, error) {
	return g.svc.Destination(ctx, aeTitle)
}

// pduProblem is the decoder's account of an invalid PDU, without the
// association layer's wrapping.
func pduProblem(err error) string {
	msg := err.Error()
	for _, sentinel := range []error{pdu.ErrMalformed, pdu.ErrUnknownType, pdu.ErrTooLong} {
		if i := strings.Index(msg, sentinel.Error()); i >= 0 {
			return msg[i:]
		}
	}
	return msg
}
