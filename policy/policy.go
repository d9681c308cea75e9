// Package policy decides who may do what: which calling peers are admitted
// to an association, from where and with which credentials, and which
// services (permissions) each may use. It owns its rule types (Rules,
// Peer, Permission, Credential); internal/config translates the TOML
// schema into them (config.Config.Policy), and the network front end maps
// DIMSE onto them (abstract syntaxes onto permissions, the user identity
// sub-item onto a Credential, a Refusal onto an A-ASSOCIATE-RJ). It is
// rebuilt on reload; its decisions are asked for at association
// negotiation (SECURITY.md, "Policy first"), and every refusal carries the
// reason the audit trail records.
package policy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is what Ward knows of a connection when its association request
// arrives.
type Conn struct {
	// Remote is the source address.
	Remote netip.Addr
	// TLS is set on the DIMSE over TLS listener; Cert is the client
	// certificate presented there (nil when none).
	TLS  bool
	Cert *x509.Certificate
	// LoopbackListener: the listener is bound to a loopback address.
	LoopbackListener bool
}

// ConnOf describes an accepted connection: its source address and, for a
// TLS connection whose handshake is done, the client certificate.
func ConnOf(c net.Conn, loopbackListener bool) Conn {
	out := Conn{Remote: AddrOf(c.RemoteAddr()), LoopbackListener: loopbackListener}
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		out.TLS = true
		if len(st.PeerCertificates) > 0 {
			out.Cert = st.PeerCertificates[0]
		}
	}
	return out
}

// AddrOf is the IP address of a TCP address (IPv4-mapped IPv6 unmapped);
// the zero Addr when it has none.
func AddrOf(a net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Grant is what an admitted association may do.
type Grant struct {
	// AETitle is the calling AE title.
	AETitle string
	// Peer is the registered peer; nil when the association was admitted
	// by the loopback any-AE opt-in.
	Peer *Peer
	// AnyAE: admitted by [dicom] loopback_any_ae, with every service.
	AnyAE bool
	// User is the verified user identity (username, or a JWT's subject);
	// empty without one.
	User string
	// IdentityResponse is the server response for a positive response
	// request (nil: none to send).
	IdentityResponse []byte
	// MaxResults caps this peer's C-FINDs (0: the archive's default).
	MaxResults int
	// MaxAssociations bounds this peer's concurrent associations.
	MaxAssociations int

	perms map[Permission]bool
}

// Has reports whether the grant includes perm.
func (g *Grant) Has(perm Permission) bool { return g != nil && g.perms[perm] }

// Allows reports whether the grant includes the permission named perm
// (archive.Grant: the archive names permissions by the same strings).
func (g *Grant) Allows(perm string) bool { return g.Has(Permission(perm)) }

// Permissions lists the granted permissions, in the order of Permissions.
func (g *Grant) Permissions() []Permission {
	var out []Permission
	for _, p := range Permissions {
		if g.perms[p] {
			out = append(out, p)
		}
	}
	return out
}

// Refusal is an association refused by policy.
type Refusal struct {
	// Kind is the class of refusal; the front end answers by it (the
	// DIMSE one with an A-ASSOCIATE-RJ).
	Kind RefusalKind
	// Reason says why, for the log and the audit trail (no patient data).
	Reason string
	// Alert marks a refusal the audit trail reports as a Security Alert
	// (an unknown AE, a peer from the wrong source or certificate, bad
	// credentials).
	Alert bool
	// Counted: the refusal is already counted against its source and
	// account by the Limiter (a failed identity verification); the caller
	// must not count it again.
	Counted bool
	// Account is the user name whose passcode was refused, or that is
	// locked out; AccountLocked and SourceLocked are the ends of the
	// lockouts this refusal started or extended (zero: none), for the log
	// and the audit trail.
	Account                     string
	AccountLocked, SourceLocked time.Time
}

func (r *Refusal) Error() string { return r.Reason }

// Transient reports whether the refusal is no verdict on the caller (a
// limit or a lockout): it is not counted towards the source's lockout.
func (r *Refusal) Transient() bool { return r.Kind == RefusedBusy }

func refuse(kind RefusalKind, alert bool, format string, args ...any) *Refusal {
	return &Refusal{
		Kind:   kind,
		Reason: fmt.Sprintf(format, args...),
		Alert:  alert,
	}
}

// Identity verifies a user's credential (policy/identity.Verifier).
type Identity interface {
	Verify(ctx context.Context, cred *Credential) (user string, response []byte, err error)
}

// Policy is the admission and permission policy built from one
// configuration.
type Policy struct {
	peers      map[string]*peerRule
	anyAE      bool
	plainNets  []netip.Prefix
	maxPerPeer int
	maxResults int
	identity   Identity
	limits     *Limiter
}

// WithLimiter makes p reserve each identity verification from l before it
// runs, and count its refusal there (Limiter.Reserve): the per-account
// and per-source lockouts. Call it before p is used.
func (p *Policy) WithLimiter(l *Limiter) *Policy {
	p.limits = l
	return p
}

// FailKey is what a refusal or a success of rq is attributed to in the
// source lockout (Limiter.FailedAs, Succeeded): its calling AE title and
// the user name it claims, if any.
func FailKey(rq Request) string {
	key := strings.TrimSpace(rq.CallingAETitle) + "\x00"
	if c := rq.Credential; c != nil && (c.Type == Username || c.Type == UsernamePasscode) {
		key += accountKey(string(c.Primary))
	}
	return key
}

type peerRule struct {
	peer        Peer
	nets        []netip.Prefix // source networks; empty: no source rule
	host        *hostBinding   // bound to a host name's addresses, or nil
	fingerprint string         // lower-case hex SHA-256 of the DER; "": none
	requireTLS  bool
	perms       map[Permission]bool
	unbound     string // why the peer cannot be admitted at all, or ""
}

// LookupHost resolves a peer's host to addresses when the peer is bound to
// it. Tests replace it.
var LookupHost = func(host string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupHost(ctx, host)
}

// HostRefresh is how long a peer's host name resolution stands before a
// call from an address it did not give resolves the name again. A
// workstation whose address changed (a new DHCP lease) is admitted once
// DNS has its new address, without a reload; a stranger claiming its AE
// title from elsewhere causes at most one lookup per HostRefresh. Tests
// change it.
var HostRefresh = 30 * time.Second

// hostBinding is a peer bound to the addresses of a host name.
type hostBinding struct {
	name string
	last atomic.Pointer[hostLookup] // the last resolution
	mu   sync.Mutex                 // serialises lookups
}

// hostLookup is one resolution of a host name.
type hostLookup struct {
	nets []netip.Prefix // nil when it failed
	err  error          // why it failed
	at   time.Time
}

func newHostBinding(name string) *hostBinding {
	h := &hostBinding{name: name}
	h.resolve()
	return h
}

func (h *hostBinding) resolve() *hostLookup {
	nets, err := resolve(h.name)
	l := &hostLookup{nets: nets, err: err, at: time.Now()}
	h.last.Store(l)
	return l
}

// admits reports whether a call from a may come from the host. An address
// the last resolution did not give resolves the name again, if that
// resolution is older than HostRefresh; calls from an address it gave
// never wait for a lookup. The error says why the name does not resolve,
// when it does not.
func (h *hostBinding) admits(a netip.Addr) (bool, error) {
	l := h.last.Load()
	if inNets(a, l.nets) {
		return true, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if l = h.last.Load(); !inNets(a, l.nets) && time.Since(l.at) >= HostRefresh {
		l = h.resolve()
	}
	return inNets(a, l.nets), l.err
}

// New builds the policy of rules. id verifies user identities; nil
// refuses every identity. It fails on a rule that cannot be applied (an
// invalid network prefix, a fingerprint that is not a SHA-256, a
// permission policy does not know).
func New(rules Rules, id Identity) (*Policy, error) {
	p := &Policy{
		peers:      map[string]*peerRule{},
		anyAE:      rules.LoopbackAnyAE,
		maxPerPeer: rules.MaxAssociationsPerPeer,
		maxResults: rules.MaxResults,
		identity:   id,
	}
	for _, pf := range rules.PlaintextNetworks {
		if !pf.IsValid() {
			return nil, errors.New("plaintext networks: an invalid prefix")
		}
		p.plainNets = append(p.plainNets, pf.Masked())
	}
	for _, peer := range rules.Peers {
		peer.Allow = slices.Clone(peer.Allow)
		peer.Networks = slices.Clone(peer.Networks)
		r := &peerRule{peer: peer, requireTLS: peer.RequireTLS, perms: map[Permission]bool{}}
		for _, s := range peer.Allow {
			if !slices.Contains(Permissions, s) {
				return nil, fmt.Errorf("peer %s: unknown permission %q", peer.AETitle, s)
			}
			r.perms[s] = true
		}
		for _, pf := range peer.Networks {
			if !pf.IsValid() {
				return nil, fmt.Errorf("peer %s: an invalid network prefix", peer.AETitle)
			}
			r.nets = append(r.nets, pf.Masked())
		}
		if peer.CertFingerprint != "" {
			fp, err := ParseFingerprint(peer.CertFingerprint)
			if err != nil {
				return nil, fmt.Errorf("peer %s: %w", peer.AETitle, err)
			}
			r.fingerprint, r.requireTLS = fp, true
		}
		if len(r.nets) == 0 && r.fingerprint == "" {
			// Bound to the host Ward reaches it at.
			if peer.Host == "" {
				r.unbound = "registered without a host, network or certificate fingerprint to bind it to (ward peer add --host, --network or --cert-fingerprint)"
			} else if _, err := netip.ParseAddr(peer.Host); err == nil {
				r.nets, _ = resolve(peer.Host)
			} else {
				r.host = newHostBinding(peer.Host)
			}
		}
		p.peers[peer.AETitle] = r
	}
	return p, nil
}

func resolve(host string) ([]netip.Prefix, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Prefix{netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
	}
	names, err := LookupHost(host)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, n := range names {
		if a, err := netip.ParseAddr(n); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no address")
	}
	return out, nil
}

func inNets(a netip.Addr, nets []netip.Prefix) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// Fingerprint is the SHA-256 of a certificate's DER encoding, lower-case
// hex: the value `ward peer add --cert-fingerprint` takes.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Admit decides on an association request whose called AE title is
// Ward's. It returns the grant, or the refusal to answer with.
func (p *Policy) Admit(ctx context.Context, rq Request, c Conn) (*Grant, *Refusal) {
	calling := strings.TrimSpace(rq.CallingAETitle)
	if !c.TLS && !c.LoopbackListener && !inNets(c.Remote, p.plainNets) && !c.Remote.IsLoopback() {
		return nil, refuse(RefusedNoReason, true, "plain DIMSE from %s, outside the networks acknowledged for plaintext ([dicom] plaintext_networks)", c.Remote)
	}
	r, ok := p.peers[calling]
	if !ok {
		if p.anyAE && !c.TLS && c.LoopbackListener && c.Remote.IsLoopback() {
			g := &Grant{AETitle: calling, AnyAE: true, MaxResults: p.maxResults, MaxAssociations: p.maxPerPeer, perms: map[Permission]bool{}}
			for _, s := range Permissions {
				g.perms[s] = true
			}
			return p.identify(ctx, rq, c, g, false)
		}
		return nil, refuse(RefusedCaller, true, "calling AE title %q is not a registered peer", calling)
	}
	if r.unbound != "" {
		return nil, refuse(RefusedCaller, true, "peer %s is %s", calling, r.unbound)
	}
	if r.requireTLS && !c.TLS {
		return nil, refuse(RefusedCaller, true, "peer %s must call over TLS (it called on the plain listener)", calling)
	}
	if r.fingerprint != "" {
		switch {
		case c.Cert == nil:
			return nil, refuse(RefusedCaller, true, "peer %s is pinned to a client certificate and presented none", calling)
		case Fingerprint(c.Cert) != r.fingerprint:
			return nil, refuse(RefusedCaller, true, "peer %s presented a client certificate (SHA-256 %s) other than the one it is pinned to", calling, Fingerprint(c.Cert))
		}
	}
	if len(r.nets) > 0 && !inNets(c.Remote, r.nets) {
		return nil, refuse(RefusedCaller, true, "peer %s called from %s, outside the source it is bound to", calling, c.Remote)
	}
	if r.host != nil {
		switch ok, err := r.host.admits(c.Remote); {
		case !ok && err != nil:
			return nil, refuse(RefusedCaller, true, "peer %s is bound to its host %s, which does not resolve: %v", calling, r.host.name, err)
		case !ok:
			return nil, refuse(RefusedCaller, true, "peer %s called from %s, which is not an address of its host %s", calling, c.Remote, r.host.name)
		}
	}
	peer := r.peer
	g := &Grant{AETitle: calling, Peer: &peer, perms: r.perms, MaxResults: p.maxResults, MaxAssociations: p.maxPerPeer}
	if peer.MaxResults != 0 {
		g.MaxResults = peer.MaxResults
	}
	if peer.MaxAssociations > 0 {
		g.MaxAssociations = peer.MaxAssociations
	}
	return p.identify(ctx, rq, c, g, peer.RequireIdentity)
}

// identify verifies the request's user identity, when there is one, and
// requires one when required is set. A presented identity that fails is
// refused even where none is required: a peer that sends credentials
// expects them checked.
//
// A passcode (type 2) or a token (type 5) is verified only once the
// Limiter has room for it (see Limiter.Reserve); one refused without
// being checked gets rejected-transient, local limit exceeded, as a
// locked-out source does.
func (p *Policy) identify(ctx context.Context, rq Request, c Conn, g *Grant, required bool) (*Grant, *Refusal) {
	id := rq.Credential
	if id == nil {
		if required {
			return nil, refuse(RefusedNoReason, true, "peer %s must present a user identity (username and passcode, or a JWT)", g.AETitle)
		}
		return g, nil
	}
	if p.identity == nil {
		return nil, refuse(RefusedNoReason, true, "peer %s presented a user identity and none is configured", g.AETitle)
	}
	var att *Attempt
	account := ""
	if p.limits != nil && (id.Type == UsernamePasscode || id.Type == JWT) {
		if id.Type == UsernamePasscode {
			account = string(id.Primary)
		}
		a, lock, err := p.limits.Reserve(ctx, c.Remote, account)
		switch {
		case lock != nil && lock.Account:
			r := refuseTransient("peer %s: user identity not checked: account %q is locked out until %s after repeated wrong passcodes", g.AETitle, ShortName(account), lock.Until.UTC().Format(time.RFC3339))
			r.Account = account
			return nil, r
		case lock != nil:
			return nil, refuseTransient("peer %s: user identity not checked: source %s is locked out until %s after repeated refusals", g.AETitle, c.Remote, lock.Until.UTC().Format(time.RFC3339))
		case err != nil:
			return nil, refuseTransient("peer %s: user identity not checked: too many verifications in flight for its account or source until the deadline (%v)", g.AETitle, err)
		}
		att = a
	}
	user, resp, err := p.identity.Verify(ctx, id)
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		// No verdict (no free verifier before the deadline): counted
		// against neither the account nor the source.
		att.Done(Undecided, "")
		return nil, refuseTransient("peer %s: user identity not checked: %v", g.AETitle, err)
	}
	if err != nil {
		r := refuse(RefusedNoReason, true, "peer %s: user identity refused: %v", g.AETitle, err)
		if att != nil {
			r.AccountLocked, r.SourceLocked = att.Done(Refused, FailKey(rq))
			r.Counted, r.Account = true, account
		}
		return nil, r
	}
	att.Done(Verified, "")
	g.User = user
	if id.PositiveResponse {
		if resp == nil {
			resp = []byte{}
		}
		g.IdentityResponse = resp
	}
	return g, nil
}

// AllowsContext reports whether g may use a presentation context needing
// perm ("" when the context is for nothing Ward provides), proposed with
// the requestor in the SCP role or not. A storage context is allowed to a
// peer with store, or, for C-GET, to a peer with get that proposes the SCP
// role (the SCU role is then withdrawn: see StoreRole).
func (g *Grant) AllowsContext(perm Permission, requestorSCP bool) bool {
	if perm == Store {
		return g.Has(Store) || (requestorSCP && g.Has(Get))
	}
	return perm != "" && g.Has(perm)
}

// StoreRole reports whether the requestor may keep the SCU role (send
// C-STORE) on a storage context.
func (g *Grant) StoreRole() bool { return g.Has(Store) }

// Required lists what a policy refusal of a permission is missing, for
// the error comment.
func Required(perm string) string {
	if slices.Contains(Permissions, Permission(perm)) {
		return "the " + perm + " permission"
	}
	return "a permission Ward does not grant"
}

// refuseTransient is a refusal without a verdict on the credentials
// (rejected-transient, local limit exceeded): not a Security Alert of its
// own, since the lockout behind it was one.
func refuseTransient(format string, args ...any) *Refusal {
	return &Refusal{
		Kind:   RefusedBusy,
		Reason: fmt.Sprintf(format, args...),
	}
}

// ShortName is a user name as the log and the audit trail show it: at
// most 64 characters (the PDU field may hold 64 KiB).
func ShortName(name string) string {
	if len(name) <= 64 {
		return name
	}
	r := []rune(name)
	if len(r) > 64 {
		r = r[:64]
	}
	s := string(r)
	if len(s) > 64 {
		s = s[:64]
	}
	return s + "…"
}
