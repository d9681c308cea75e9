package server

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimsearchive"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
)

// connSession negotiates one connection's association under the policy in
// effect when it arrived: it admits or refuses the calling peer, answers
// its user identity, and accepts only the presentation contexts of the
// services the peer may use. It remembers what it decided for the audit
// trail and for the DIMSE services (the grant).
type connSession struct {
	s        *Server
	conn     net.Conn
	loopback bool // the listener is bound to loopback
	pol      *policy.Policy
	acc      assoc.Acceptor
	pass     *pass // the connection's place in the budget (nil in tests)

	rq       *pdu.AssociateRQ
	info     policy.Conn
	grant    *policy.Grant
	refusal  *policy.Refusal
	acquired bool // holds one of the peer's association slots
	// refusedContexts counts contexts rejected for want of a permission,
	// by permission, for the audit trail.
	refusedContexts map[policy.Permission]int
}

func (s *Server) newSession(conn net.Conn, loopback bool, p *pass) *connSession {
	cs := &connSession{s: s, conn: conn, loopback: loopback, pol: s.policy.Load(), acc: *s.neg, pass: p}
	base := s.neg.TransferSyntaxes
	cs.acc.Check = cs.check
	cs.acc.Identity = cs.identity
	cs.acc.Invalid = func(_ *pdu.AssociateRQ, err error) {
		// Refused, audited and counted towards the lockout like other
		// refusals, as a security alert: no honest toolkit sends it.
		cs.refusal = &policy.Refusal{
			Kind:   policy.RefusedInvalid,
			Reason: "invalid association request: " + strings.TrimPrefix(err.Error(), "assoc: "),
			Alert:  true,
		}
	}
	cs.acc.TransferSyntaxes = func(rq *pdu.AssociateRQ, remote net.Addr, abstract string) ([]string, func(string) bool, bool) {
		pref, accepts, ok := base(rq, remote, abstract)
		if !ok {
			return nil, nil, false
		}
		svc := dimsearchive.PermissionOf(abstract, s.isPrivate)
		if !cs.grant.AllowsContext(svc, requestsSCPRole(rq, abstract)) {
			if cs.refusedContexts == nil {
				cs.refusedContexts = map[policy.Permission]int{}
			}
			cs.refusedContexts[svc]++
			return nil, nil, false
		}
		return pref, accepts, true
	}
	cs.acc.SCURole = func(abstract string) bool {
		if dimsearchive.PermissionOf(abstract, s.isPrivate) == policy.Store {
			return cs.grant.StoreRole()
		}
		return true
	}
	return cs
}

func requestsSCPRole(rq *pdu.AssociateRQ, abstract string) bool {
	return slices.ContainsFunc(rq.UserInfo.Roles, func(r pdu.RoleSelection) bool {
		return r.SOPClassUID == abstract && r.SCP
	})
}

// Negotiate implements assoc.Negotiator.
func (cs *connSession) Negotiate(rq *pdu.AssociateRQ, remote net.Addr) (*pdu.AssociateAC, *pdu.AssociateRJ) {
	cs.rq = rq
	// The request is in: the first-PDU deadline gives way to ARTIM, which
	// bounds the negotiation and, after a rejection, the wait for the peer
	// to close.
	_ = cs.conn.SetReadDeadline(time.Now().Add(cs.s.Config.DICOM.ARTIMTimeout.Duration))
	return cs.acc.Negotiate(rq, remote)
}

// check runs before the called AE title is checked (an unknown caller
// gets reason 3 whatever title it called). The TLS handshake (if any) is
// done by then, so the client certificate is known.
func (cs *connSession) check(rq *pdu.AssociateRQ, _ net.Addr) *pdu.AssociateRJ {
	cs.info = policy.ConnOf(cs.conn, cs.loopback)
	// A lockout that started while this connection waited (it was
	// accepted before) holds for it too.
	if until, locked := cs.s.limits.Locked(cs.info.Remote); locked {
		cs.refusal = &policy.Refusal{
			Kind:   policy.RefusedBusy,
			Reason: "source " + cs.info.Remote.String() + " is locked out until " + until.UTC().Format(time.RFC3339) + " after repeated refusals",
		}
		return dimsearchive.Reject(cs.refusal)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cs.s.Config.DICOM.ARTIMTimeout.Duration)
	defer cancel()
	g, r := cs.pol.Admit(ctx, dimsearchive.RequestOf(rq), cs.info)
	if r != nil {
		cs.refusal = r
		return dimsearchive.Reject(r)
	}
	if !cs.s.limits.Acquire(g.AETitle, g.MaxAssociations) {
		cs.refusal = &policy.Refusal{
			Kind:   policy.RefusedBusy,
			Reason: "peer " + g.AETitle + " already has its maximum number of associations open",
		}
		return dimsearchive.Reject(cs.refusal)
	}
	// Only now, admitted, does the connection take an association slot.
	if cs.pass != nil && !cs.pass.admit() {
		cs.s.limits.Release(g.AETitle)
		cs.refusal = &policy.Refusal{
			Kind:   policy.RefusedBusy,
			Reason: "Ward already has its maximum number of associations open ([dicom] max_associations)",
		}
		return dimsearchive.Reject(cs.refusal)
	}
	cs.acquired = true
	cs.grant = g
	return nil
}

func (cs *connSession) identity(*pdu.AssociateRQ, *pdu.UserIdentity, net.Addr) ([]byte, *pdu.AssociateRJ) {
	return cs.grant.IdentityResponse, nil
}

// release gives back the peer's association slot.
func (cs *connSession) release() {
	if cs.acquired {
		cs.s.limits.Release(cs.grant.AETitle)
		cs.acquired = false
	}
}

// remoteAddr is the connection's source address.
func remoteAddr(c net.Conn) netip.Addr { return policy.AddrOf(c.RemoteAddr()) }

// failKey is what a refusal or a success of rq counts against in the
// source lockout (policy.FailKey).
func failKey(rq *pdu.AssociateRQ) string { return policy.FailKey(dimsearchive.RequestOf(rq)) }
