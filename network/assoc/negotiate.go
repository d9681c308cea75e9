package assoc

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/ward-pacs/ward/network/pdu"
)

// Acceptor is the acceptor's negotiation: it checks the called AE title and
// the application context, asks Check about the peer, and accepts each
// presentation context whose abstract syntax Ward supports with the first
// transfer syntax of Ward's preference that the peer proposed.
type Acceptor struct {
	// AETitle is Ward's AE title; an association addressed to any other is
	// rejected with reason 7 (called AE title not recognized).
	AETitle string
	// Check decides on the calling peer. It runs before the called AE
	// title is compared with AETitle, so that a caller refused here learns
	// nothing about Ward's title (every guess gets the same rejection). It
	// returns a rejection, or nil to go on.
	Check func(rq *pdu.AssociateRQ, remote net.Addr) *pdu.AssociateRJ
	// TransferSyntaxes returns, for an abstract syntax the peer may use,
	// Ward's acceptable transfer syntaxes in preference order. accepts
	// reports whether a transfer syntax not in the list (e.g. a compressed
	// one) is acceptable too; such syntaxes rank after the listed ones, in
	// the peer's order. ok is false when the abstract syntax is not
	// supported or not allowed for this peer.
	TransferSyntaxes func(rq *pdu.AssociateRQ, remote net.Addr, abstract string) (pref []string, accepts func(ts string) bool, ok bool)
	// SCPRole reports whether the requestor may take the SCP role for an
	// abstract syntax (C-GET retrieving into the requestor).
	SCPRole func(abstract string) bool
	// SCURole, when set, reports whether a requestor that selects roles
	// for an abstract syntax may keep the SCU role there (e.g. a peer
	// allowed to retrieve by C-GET but not to store). Nil keeps the SCU
	// role as proposed.
	SCURole func(abstract string) bool
	// Identity checks a user identity request; it returns the server
	// response to send when a positive response was requested, or a
	// rejection. Nil accepts any identity without response.
	Identity func(rq *pdu.AssociateRQ, id *pdu.UserIdentity, remote net.Addr) (response []byte, rj *pdu.AssociateRJ)

	// Invalid, when set, is told why a request was rejected as
	// inconsistent (CheckRequest), for the log and the audit trail.
	Invalid func(rq *pdu.AssociateRQ, err error)

	MaxPDULength              uint32
	ImplementationClassUID    string
	ImplementationVersionName string
}

// ErrInvalidRequest: an A-ASSOCIATE-RQ whose items contradict each other.
var ErrInvalidRequest = errors.New("assoc: inconsistent A-ASSOCIATE-RQ")

// CheckRequest reports what makes a decoded A-ASSOCIATE-RQ inconsistent
// (the decoder has already refused what is malformed item by item, e.g. a
// presentation context with two abstract syntaxes):
//   - two presentation contexts with one ID: the requestor gives each
//     proposed context an unused ID (PS3.8 7.1.1.13), and the acceptor
//     answers each proposed context once, by ID (7.1.1.14), which cannot
//     be done for two contexts with one ID;
//   - two SCP/SCU role selection sub-items for one SOP class (PS3.7
//     D.3.3.4 allows one per SOP class), which may contradict each other.
//
// A role selection for a SOP class that no presentation context proposes
// is not an error: it selects nothing, and Negotiate turns both roles
// down.
func CheckRequest(rq *pdu.AssociateRQ) error {
	ids := make(map[byte]bool, len(rq.Contexts))
	for _, pc := range rq.Contexts {
		if ids[pc.ID] {
			return fmt.Errorf("%w: two presentation contexts with ID %d", ErrInvalidRequest, pc.ID)
		}
		ids[pc.ID] = true
	}
	roles := make(map[string]bool, len(rq.UserInfo.Roles))
	for _, r := range rq.UserInfo.Roles {
		if roles[r.SOPClassUID] {
			return fmt.Errorf("%w: two SCP/SCU role selections for SOP class %s", ErrInvalidRequest, r.SOPClassUID)
		}
		roles[r.SOPClassUID] = true
	}
	return nil
}

// invalidRequestRJ answers an inconsistent request: rejected-permanent,
// by the service provider's ACSE (a protocol matter, not a decision about
// the peer), no reason given (PS3.8 Table 9-21 has none closer).
func invalidRequestRJ() *pdu.AssociateRJ {
	return reject(pdu.RejectPermanent, pdu.RejectSourceACSE, pdu.RejectACSENoReason)
}

func reject(result, source, reason byte) *pdu.AssociateRJ {
	return &pdu.AssociateRJ{Result: result, Source: source, Reason: reason}
}

// Negotiate implements Negotiator.
func (n *Acceptor) Negotiate(rq *pdu.AssociateRQ, remote net.Addr) (*pdu.AssociateAC, *pdu.AssociateRJ) {
	if rq.ProtocolVersion&1 == 0 {
		return nil, reject(pdu.RejectPermanent, pdu.RejectSourceACSE, pdu.RejectProtocolVersionUnsupported)
	}
	if rq.ApplicationContext != pdu.ApplicationContextName {
		return nil, reject(pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectAppContextUnsupported)
	}
	if err := CheckRequest(rq); err != nil {
		if n.Invalid != nil {
			n.Invalid(rq, err)
		}
		return nil, invalidRequestRJ()
	}
	if n.Check != nil {
		if rj := n.Check(rq, remote); rj != nil {
			return nil, rj
		}
	}
	if strings.TrimSpace(rq.CalledAETitle) != n.AETitle {
		return nil, reject(pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectCalledAENotRecognized)
	}
	ac := &pdu.AssociateAC{
		ProtocolVersion:    1,
		CalledAETitle:      rq.CalledAETitle,
		CallingAETitle:     rq.CallingAETitle,
		ApplicationContext: pdu.ApplicationContextName,
		UserInfo: pdu.UserInfo{
			MaxLength:                 n.MaxPDULength,
			ImplementationClassUID:    n.ImplementationClassUID,
			ImplementationVersionName: n.ImplementationVersionName,
		},
	}
	if id := rq.UserInfo.UserIdentity; id != nil && n.Identity != nil {
		resp, rj := n.Identity(rq, id, remote)
		if rj != nil {
			return nil, rj
		}
		if id.PositiveResponse && resp != nil {
			ac.UserInfo.UserIdentityResponse, ac.UserInfo.HasIdentityResponse = resp, true
		}
	}
	proposed := map[string]bool{}
	for _, pc := range rq.Contexts {
		proposed[pc.AbstractSyntax] = true
		res := pdu.PresentationContext{ID: pc.ID, Result: pdu.ResultAbstractSyntaxNotSupported, TransferSyntaxes: []string{""}}
		if pref, accepts, ok := n.TransferSyntaxes(rq, remote, pc.AbstractSyntax); ok {
			if ts := chooseTransferSyntax(pc.TransferSyntaxes, pref, accepts); ts != "" {
				res.Result, res.TransferSyntaxes = pdu.ResultAcceptance, []string{ts}
			} else {
				res.Result = pdu.ResultTransferSyntaxesNotSupported
			}
		}
		ac.Contexts = append(ac.Contexts, res)
	}
	for _, r := range rq.UserInfo.Roles {
		// Answer every role selection (PS3.7 D.3.3.4): the SCU role stays
		// as proposed, the SCP role only where Ward allows it; both are
		// turned down for a SOP class that no context proposes.
		uid := r.SOPClassUID
		scp := proposed[uid] && r.SCP && n.SCPRole != nil && n.SCPRole(uid)
		scu := proposed[uid] && r.SCU && (n.SCURole == nil || n.SCURole(uid))
		ac.UserInfo.Roles = append(ac.UserInfo.Roles, pdu.RoleSelection{SOPClassUID: uid, SCU: scu, SCP: scp})
	}
	return ac, nil
}

func chooseTransferSyntax(proposed, pref []string, accepts func(string) bool) string {
	for _, p := range pref {
		for _, ts := range proposed {
			if ts == p {
				return ts
			}
		}
	}
	if accepts != nil {
		for _, ts := range proposed {
			if accepts(ts) {
				return ts
			}
		}
	}
	return ""
}

// negotiate runs the acceptor's negotiation and records the outcome.
func (a *Association) negotiate() (*pdu.AssociateAC, *pdu.AssociateRJ) {
	ac, rj := a.negotiator.Negotiate(a.rq, a.remote)
	if rj != nil {
		return nil, rj
	}
	if ac.UserInfo.MaxLength == 0 {
		ac.UserInfo.MaxLength = a.cfg.MaxPDULength
	}
	if ac.UserInfo.ImplementationClassUID == "" {
		ac.UserInfo.ImplementationClassUID = a.cfg.ImplementationClassUID
	}
	if ac.UserInfo.ImplementationVersionName == "" {
		ac.UserInfo.ImplementationVersionName = a.cfg.ImplementationVersionName
	}
	a.setPeerMax(a.rq.UserInfo.MaxLength)
	a.contexts = buildContexts(a.rq, ac)
	return ac, nil
}

// acceptedBy records the acceptor's answer on the requestor side.
func (a *Association) acceptedBy(ac *pdu.AssociateAC) error {
	a.ac = ac
	a.setPeerMax(ac.UserInfo.MaxLength)
	a.contexts = buildContexts(a.rq, ac)
	proposed := map[byte]pdu.PresentationContext{}
	for _, pc := range a.rq.Contexts {
		proposed[pc.ID] = pc
	}
	answered := map[byte]bool{}
	for _, pc := range ac.Contexts {
		if answered[pc.ID] {
			return fmt.Errorf("%w: presentation context %d answered twice", ErrProtocol, pc.ID)
		}
		answered[pc.ID] = true
		if pc.Result != pdu.ResultAcceptance {
			continue
		}
		p, ok := proposed[pc.ID]
		if !ok {
			return fmt.Errorf("%w: accepted presentation context %d was not proposed", ErrProtocol, pc.ID)
		}
		if len(pc.TransferSyntaxes) == 0 || !slices.Contains(p.TransferSyntaxes, pc.TransferSyntaxes[0]) {
			return fmt.Errorf("%w: presentation context %d accepted with a transfer syntax that was not proposed", ErrProtocol, pc.ID)
		}
	}
	return nil
}

func (a *Association) setPeerMax(v uint32) {
	switch {
	case v == 0 || v > peerUnlimitedSendBound:
		a.peerMax = peerUnlimitedSendBound
	case v < 64:
		a.peerMax = 64
	default:
		a.peerMax = v
	}
}

// buildContexts pairs the proposed and the accepted presentation contexts.
func buildContexts(rq *pdu.AssociateRQ, ac *pdu.AssociateAC) map[byte]*Context {
	proposed := map[byte]pdu.PresentationContext{}
	for _, pc := range rq.Contexts {
		proposed[pc.ID] = pc
	}
	roles := map[string]pdu.RoleSelection{}
	for _, r := range ac.UserInfo.Roles {
		roles[r.SOPClassUID] = r
	}
	out := map[byte]*Context{}
	for _, pc := range ac.Contexts {
		p, ok := proposed[pc.ID]
		if !ok || pc.Result != pdu.ResultAcceptance || len(pc.TransferSyntaxes) == 0 {
			continue
		}
		c := &Context{ID: pc.ID, AbstractSyntax: p.AbstractSyntax, TransferSyntax: pc.TransferSyntaxes[0], RequestorSCU: true}
		if r, ok := roles[p.AbstractSyntax]; ok {
			c.RequestorSCU, c.RequestorSCP = r.SCU, r.SCP
		}
		out[pc.ID] = c
	}
	return out
}
