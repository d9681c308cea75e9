// Package server wires a running Ward: the stores, the archive, the DIMSE
// listener and its associations, and an orderly shutdown.
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/dicom/deid"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimsearchive"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/tokens"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/encblob"
	"github.com/ward-pacs/ward/store/pgshared"
	webviewer "github.com/ward-pacs/ward/web/viewer"
)

// ShutdownGrace is how long in-flight associations may run after a stop
// signal before they are aborted.
const ShutdownGrace = 10 * time.Second

// Server is one running Ward.
type Server struct {
	Config *config.Config
	Logger *slog.Logger
	// Load reads the configuration again, as it was read at start (the
	// same file, the same flags over it), for a reload asked for on the
	// admin socket (ward peer, ward user). Nil: such reloads are refused.
	Load func() (*config.Config, error)
	// ConfigFile is the configuration file users are written to (the
	// first-run set-up's administrator); "" disables the set-up.
	ConfigFile string
	// SetupOut is the terminal the first-run set-up link is printed on
	// (never the log); nil disables the set-up.
	SetupOut io.Writer
	// FixPermissions: Open tightens a data directory open to other local
	// users instead of refusing it (datadir.go).
	FixPermissions bool
	// FetchViewer: when the viewer is not in the data directory, fetch it
	// there with npm (ward serve's first run; viewer.go).
	FetchViewer bool
	// Version is Ward's version, in the build information metric.
	Version string

	// node is this node's ID (backends.go); store is what openStore
	// opened (index and blobs below are its own).
	node string
	// shared is the cluster's shared state (peers, users, tokens,
	// sessions) when the index is PostgreSQL (cluster.go); nil for a
	// single Ward.
	shared  *pgshared.Shared
	store   *store.Store
	index   store.Index
	blobs   store.Blobs
	archive *archive.Archive
	ln      net.Listener
	tlsLn   net.Listener      // DIMSE over TLS (the TCP listener); nil without [dicom] tls_listen
	tlsConf *tls.Config       // its TLS configuration
	adminLn net.Listener      // the admin socket (admin.Socket)
	webLn   net.Listener      // the HTTP listener ([web] listen); nil when off
	webTLS  *tls.Config       // its TLS configuration; nil for plain HTTP (loopback)
	viewer  *webviewer.Viewer // the viewer at /; nil when [web] viewer is off
	// oidcSecret is the OpenID client secret ([web.oidc] client_secret_file).
	oidcSecret string
	peerTLS    *tls.Config // calling peers over TLS (C-MOVE destinations)
	neg        *assoc.Acceptor
	// The connection budget (connlimit.go): places for connections before
	// and after admission, the refusers, and the first-PDU deadline.
	gate     *connGate
	refusers chan struct{}
	refusals refusalLog
	firstPDU time.Duration
	audit    *audit.Log // nil when [audit] enabled = false
	// Operations: the metrics (metrics.go), readiness and the metrics
	// listener (health.go).
	mx     *metrics
	health health
	mon    metricsListener

	// peers is the registered peer list and policy the admission policy
	// built from it, both replaced by Reload; limits outlive reloads.
	peers  atomic.Pointer[[]config.Peer]
	policy atomic.Pointer[policy.Policy]
	limits *policy.Limiter
	// lockoutOut: this node's lockout events for the other nodes
	// (cluster.go), nil outside a cluster.
	lockoutOut chan policy.LockoutEvent
	// tokens are the API tokens (the token file) and their verifier,
	// replaced with the policy.
	tokens  atomic.Pointer[tokenState]
	private map[string]bool
	// reloadMu serialises ReloadConfig; loaded is the configuration it
	// last put in effect (Config until then), under reloadMu.
	reloadMu sync.Mutex
	loaded   *config.Config

	// dicomBalancers are the load balancers whose connections to the
	// DIMSE listeners open with a PROXY header (proxy.go).
	dicomBalancers balancers

	// retentionMu: one retention pass at a time in this process
	// (retention.go).
	retentionMu sync.Mutex

	mu     sync.Mutex
	active map[*assoc.Association]struct{}
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// Open validates the configuration, opens the stores, recovers after a crash
// and binds the listener.
func (s *Server) Open(ctx context.Context) error {
	c := s.Config
	if err := c.Validate(); err != nil {
		return err
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	// The self-check: refuse what would reopen the 2019 exposure, warn
	// about the rest at every start.
	findings := c.Check()
	if refused := config.Refused(findings); len(refused) > 0 {
		msgs := make([]string, len(refused))
		for i, f := range refused {
			msgs[i] = f.String()
		}
		return fmt.Errorf("refusing risky settings (ward config check lists them all):\n  %s", strings.Join(msgs, "\n  "))
	}
	// The node ID first: it is in every log record.
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	var err error
	if s.node, err = nodeID(c); err != nil {
		return err
	}
	s.Logger = s.Logger.With("node", s.node)
	for _, f := range findings {
		level := slog.LevelWarn
		if f.Severity == config.Info {
			level = slog.LevelInfo
		}
		s.Logger.Log(ctx, level, "risky setting", "severity", f.Severity.String(), "setting", f.Setting, "problem", f.Problem, "fix", f.Fix)
	}
	if err := s.checkDataDir(); err != nil {
		return err
	}
	s.mx = newMetrics(s)
	spec := storeSpec(c, s.node)
	if s.store, err = store.Open(ctx, spec); err != nil {
		return err
	}
	s.index, s.blobs = s.store.Index, s.store.Blobs
	s.Logger.Info("store opened", "index", spec.Index, "blobs", spec.Blobs,
		"capabilities", strings.Join(s.store.Caps.Names(), " "))
	if eb, ok := encblob.From(s.store.Blobs); ok {
		s.Logger.Info("objects are encrypted at rest", "key", eb.Keyring().Current(), "keys", strings.Join(eb.Keyring().IDs(), " "))
	}
	if err := s.openShared(ctx); err != nil {
		s.closeStores()
		return err
	}
	rules, _, err := c.Policy()
	if err != nil {
		s.closeStores()
		return err
	}
	s.limits = policy.NewLimiter(rules.Lockout)
	s.shareLockouts()
	if s.loaded, err = s.putPolicy(c); err != nil {
		s.closeStores()
		return err
	}
	minFree, minFreeShare, err := c.Storage.MinFreeBytes()
	if err != nil {
		s.closeStores()
		return err
	}
	s.archive = &archive.Archive{Index: s.index, Blobs: s.blobs, Caps: &s.store.Caps, Node: s.node, Logger: s.Logger, OnDuplicate: archive.DuplicatePolicy(c.Storage.OnDuplicate),
		MinFree: minFree, MinFreeShare: minFreeShare,
		AETitle: c.AETitle, Destinations: s.Destination, DestinationDeidentify: s.destinationDeidentify,
		MaxFindResults: c.Query.MaxResults, PNCaseSensitive: c.Query.PNCaseSensitive}
	secret, err := readDeidSecret(c)
	if err != nil {
		s.closeStores()
		return err
	}
	s.archive.SetDeidSecret(secret)
	if err := s.archive.Open(ctx); err != nil {
		s.closeStores()
		return err
	}
	if err := s.openAudit(); err != nil {
		s.closeStores()
		return err
	}
	if err := admin.FinishDeletions(ctx, s.archive, s.trail(), s.wardNode()); err != nil {
		s.closeStores()
		return err
	}
	s.neg = s.acceptor()
	crl, err := newRevocations(&c.DICOM, s.Logger)
	if err != nil {
		s.closeStores()
		return err
	}
	if s.peerTLS, err = peerTLS(&c.DICOM, crl); err != nil {
		s.closeStores()
		return err
	}
	var tlsConf *tls.Config
	if c.DICOM.TLSListen != "" {
		if tlsConf, err = tlsConfig(&c.DICOM, crl); err != nil {
			s.closeStores()
			return err
		}
	}
	if s.ln, err = net.Listen("tcp", c.DICOM.Listen); err != nil {
		s.closeStores()
		return fmt.Errorf("dicom listener: %w", err)
	}
	if tlsConf != nil {
		// Connections are wrapped in TLS once they have a place in the
		// budget: none is spent on a refused one.
		if s.tlsLn, err = net.Listen("tcp", c.DICOM.TLSListen); err != nil {
			s.ln.Close()
			s.closeStores()
			return fmt.Errorf("dicom tls listener: %w", err)
		}
		s.tlsConf = tlsConf
	}
	if err := s.listenAdmin(); err != nil {
		s.ln.Close()
		if s.tlsLn != nil {
			s.tlsLn.Close()
		}
		s.closeStores()
		return err
	}
	if err := s.listenWeb(); err != nil {
		s.ln.Close()
		if s.tlsLn != nil {
			s.tlsLn.Close()
		}
		if s.adminLn != nil {
			s.adminLn.Close()
		}
		s.closeStores()
		return err
	}
	if err := s.listenMetrics(); err != nil {
		s.closeListeners()
		s.closeStores()
		return err
	}
	s.openGate()
	if s.dicomBalancers, err = newBalancers(c.DICOM.ProxyFrom); err != nil {
		s.closeListeners()
		s.closeStores()
		return fmt.Errorf("dicom proxy_from: %w", err)
	}
	s.active = map[*assoc.Association]struct{}{}
	s.conns = map[net.Conn]struct{}{}
	return nil
}

// Addr is the DIMSE listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// TLSAddr is the DIMSE over TLS listener's address, nil without one.
func (s *Server) TLSAddr() net.Addr {
	if s.tlsLn == nil {
		return nil
	}
	return s.tlsLn.Addr()
}

// Index gives access to the index (tests, admin commands).
func (s *Server) Index() store.Index { return s.index }

// Blobs gives access to the blob store.
func (s *Server) Blobs() store.Blobs { return s.blobs }

func (s *Server) closeStores() {
	if s.archive != nil {
		s.archive.Close()
	}
	if s.blobs != nil {
		s.blobs.Close()
	}
	if s.index != nil {
		s.index.Close()
	}
	if s.shared != nil {
		s.shared.Close()
	}
	s.closeAudit()
}

// Peers returns the registered peers in effect.
func (s *Server) Peers() []config.Peer {
	if p := s.peers.Load(); p != nil {
		return *p
	}
	return nil
}

// Destination resolves a C-MOVE destination: a registered peer with the
// move-destination permission and an address (host and port). A refusal
// wraps dimse.ErrUnknownDestination and says why.
func (s *Server) Destination(aet string) (string, error) {
	c := config.Config{Peers: s.Peers()}
	p, ok := c.Peer(aet)
	if !ok {
		return "", archive.Failf(archive.ErrUnknownDestination, "%q is not a registered peer", aet)
	}
	addr, err := p.Destination()
	if err != nil {
		return "", &archive.Error{Kind: archive.ErrUnknownDestination, Comment: fmt.Sprintf("%q is not a move destination", aet), Err: err}
	}
	return addr, nil
}

// destinationDeidentify is the de-identification profile of a C-MOVE
// destination in effect ("" for none): the registry's, as reloaded.
func (s *Server) destinationDeidentify(aet string) (string, error) {
	c := config.Config{Peers: s.Peers()}
	p, ok := c.Peer(aet)
	if !ok {
		return "", archive.Failf(archive.ErrUnknownDestination, "%q is not a registered peer", aet)
	}
	return p.Deidentify, nil
}

// readDeidSecret reads the de-identification secret c names ([deidentify]
// secret_file), nil when it names none.
func readDeidSecret(c *config.Config) ([]byte, error) {
	if c.Deidentify.SecretFile == "" {
		return nil, nil
	}
	return deid.ReadSecret(c.Deidentify.SecretFile)
}

// dialDestination connects to a C-MOVE destination: over TLS when the
// peer is registered with tls = true, verifying its certificate for its
// host name, else plain TCP.
func (s *Server) dialDestination(ctx context.Context, aet, addr string) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: assoc.DefaultConnectTimeout}}
	c := config.Config{Peers: s.Peers()}
	p, ok := c.Peer(aet)
	if !ok || !p.TLS {
		return d.NetDialer.DialContext(ctx, "tcp", addr)
	}
	tc := s.peerTLS.Clone()
	tc.ServerName = p.Host
	d.Config = tc
	// The handshake is bounded like association set-up.
	dctx, cancel := context.WithTimeout(ctx, s.Config.DICOM.ARTIMTimeout.Duration)
	defer cancel()
	return d.DialContext(dctx, "tcp", addr)
}

// Reload applies what may change in a running Ward: the peers, users
// and tokens (in cluster mode, those of the shared index). Other settings
// need a restart.
func (s *Server) Reload(c *config.Config) error {
	_, err := s.reload(c)
	return err
}

// reload is Reload, returning the configuration put in effect (c, or in
// cluster mode c with the shared index's peers and users).
func (s *Server) reload(c *config.Config) (*config.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if refused := config.Refused(c.Check()); len(refused) > 0 {
		return nil, fmt.Errorf("refusing risky settings: %s", refused[0])
	}
	// The de-identification secret follows the file too, so that a peer
	// or user given deidentify by this reload retrieves at once; read
	// first (a secret that cannot be read refuses the reload), put in
	// effect after the policy (until then, such a retrieve is refused,
	// never sent identified).
	secret, err := readDeidSecret(c)
	if err != nil {
		return nil, err
	}
	eff, err := s.putPolicy(c)
	if err != nil {
		return nil, err
	}
	if s.archive != nil {
		s.archive.SetDeidSecret(secret)
	}
	s.Logger.Info("configuration reloaded", "peers", len(eff.Peers), "users", len(eff.Users))
	return eff, nil
}

// ReloadConfig reads the configuration again with Load and puts its
// peers and users in effect (Reload). Reloads run one at a time, so the
// last file read is the one in effect. A change of the peers or users is
// audited as a Security Alert (Security Configuration) naming operator,
// who asked for the reload.
func (s *Server) ReloadConfig(operator string) (*config.Config, error) {
	if s.Load == nil {
		return nil, errors.New("this ward serve cannot read its configuration again (no Load)")
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	c, err := s.Load()
	if err != nil {
		return nil, err
	}
	prevTokens := &tokens.Set{}
	if t := s.tokens.Load(); t != nil {
		prevTokens = t.set
	}
	var secretBefore []byte
	if s.archive != nil {
		secretBefore = s.archive.DeidSecret()
	}
	if c, err = s.reload(c); err != nil {
		return nil, err
	}
	prev := s.loaded
	if prev == nil {
		prev = s.Config
	}
	s.loaded = c
	// A user given a new passcode (or added again) starts afresh: the
	// administrator's new passcode works at once.
	old := map[string]string{}
	for _, u := range prev.Users {
		old[u.Name] = u.Hash
	}
	for _, u := range c.Users {
		if old[u.Name] != u.Hash {
			s.limits.ForgetAccount(u.Name)
		}
	}
	change := configChange(prev, c)
	if d := secretChange(secretBefore, s.archive); d != "" {
		change = strings.TrimPrefix(change+"; "+d, "; ")
	}
	if change != "" {
		s.Logger.Info("peers or users changed", "operator", operator, "change", change)
		s.record(audit.SecurityConfigChanged(s.wardNode(), audit.Node{ID: operator}, change, time.Now()))
	}
	if change := tokenChange(prevTokens, s.tokens.Load().set); change != "" {
		s.Logger.Info("api tokens changed", "operator", operator, "change", change)
		s.record(audit.SecurityConfigChanged(s.wardNode(), audit.Node{ID: operator}, change, time.Now()))
	}
	return c, nil
}

// secretChange says whether the de-identification secret in effect
// changed from before ("" when not): never the secret.
func secretChange(before []byte, ar *archive.Archive) string {
	if ar == nil {
		return ""
	}
	after := ar.DeidSecret()
	switch {
	case bytes.Equal(before, after):
		return ""
	case before == nil:
		return "de-identification secret set"
	case after == nil:
		return "de-identification secret removed"
	}
	return "de-identification secret replaced"
}

// configChange says which peers and users differ between two
// configurations ("" when none): names only, never a hash.
func configChange(old, c *config.Config) string {
	var parts []string
	diff := func(kind string, before, after map[string]string) {
		var added, removed, changed []string
		for name, v := range after {
			if w, ok := before[name]; !ok {
				added = append(added, name)
			} else if w != v {
				changed = append(changed, name)
			}
		}
		for name := range before {
			if _, ok := after[name]; !ok {
				removed = append(removed, name)
			}
		}
		for _, l := range []struct {
			verb  string
			names []string
		}{{"added", added}, {"changed", changed}, {"removed", removed}} {
			if len(l.names) > 0 {
				slices.Sort(l.names)
				parts = append(parts, kind+" "+l.verb+": "+strings.Join(l.names, ", "))
			}
		}
	}
	peers := func(c *config.Config) map[string]string {
		m := map[string]string{}
		for _, p := range c.Peers {
			m[p.AETitle] = fmt.Sprintf("%#v", p)
		}
		return m
	}
	users := func(c *config.Config) map[string]string {
		m := map[string]string{}
		for _, u := range c.Users {
			// A change of roles is a change of the user.
			m[u.Name] = u.Hash + " " + strings.Join(u.Roles, ",") + " " + u.Deidentify
		}
		return m
	}
	diff("peers", peers(old), peers(c))
	diff("users", users(old), users(c))
	return strings.Join(parts, "; ")
}

// reloadFromAdmin reloads the configuration for an admin request
// (operator names who asked) and says what is in effect.
func (s *Server) reloadFromAdmin(operator string) (*admin.Reloaded, error) {
	s.Logger.Info("reloading the configuration", "operator", operator)
	c, err := s.ReloadConfig(operator)
	if err != nil {
		s.Logger.Error("configuration not reloaded; the previous one stays in effect", "operator", operator, "err", err.Error())
		return nil, fmt.Errorf("ward serve did not reload its configuration, the previous one stays in effect: %w", err)
	}
	res := &admin.Reloaded{Peers: []string{}, Users: []string{}, Tokens: s.activeTokens()}
	for _, p := range c.Peers {
		res.Peers = append(res.Peers, p.AETitle)
	}
	for _, u := range c.Users {
		res.Users = append(res.Users, u.Name)
	}
	return res, nil
}

// setPolicy builds the admission policy of c and puts it, with c's peers,
// in effect for associations that arrive from now on.
func (s *Server) setPolicy(c *config.Config) error {
	_, err := s.putPolicy(c)
	return err
}

// putPolicy is setPolicy, returning the configuration put in effect: c
// with the token file, or in cluster mode c with the peers, users and
// tokens of the shared index (cluster.go).
func (s *Server) putPolicy(c *config.Config) (*config.Config, error) {
	c, set, err := s.current(c)
	if err != nil {
		return nil, err
	}
	rules, settings, err := c.Policy()
	if err != nil {
		return nil, err
	}
	id, err := s.identityVerifier(settings)
	if err != nil {
		return nil, err
	}
	p, err := policy.New(rules, id)
	if err != nil {
		return nil, err
	}
	p.WithLimiter(s.limits)
	v := tokens.NewVerifier(set, func(u string) []policy.Role { return rules.Roles[u] }, nil)
	peers := append([]config.Peer(nil), c.Peers...)
	s.peers.Store(&peers)
	s.policy.Store(p)
	deidOf := map[string]string{}
	for _, u := range c.Users {
		if u.Deidentify != "" {
			deidOf[u.Name] = u.Deidentify
		}
	}
	s.tokens.Store(&tokenState{set: set, verifier: v, identity: id, roles: rules.Roles, deid: deidOf})
	return c, nil
}

// tokenState is a token file as read, and its verifier; and the users'
// passcode verifier and roles, for browser sign-in (web.go).
type tokenState struct {
	set      *tokens.Set
	verifier *tokens.Verifier
	identity policy.Identity
	roles    map[string][]policy.Role
	// deid holds the users' de-identification profiles.
	deid map[string]string
}

// TokenVerifier verifies API tokens against the token file and the users'
// roles in effect (both replaced by a reload, so that a revocation takes
// effect at once). The web front end calls it.
func (s *Server) TokenVerifier() *tokens.Verifier {
	if t := s.tokens.Load(); t != nil {
		return t.verifier
	}
	return tokens.NewVerifier(&tokens.Set{}, nil, nil)
}

// activeTokens are the IDs of the tokens not revoked in the token file in
// effect (expired ones included: they fail on their own).
func (s *Server) activeTokens() []string {
	ids := []string{}
	if t := s.tokens.Load(); t != nil {
		for _, r := range t.set.Tokens {
			if r.Revoked.IsZero() {
				ids = append(ids, r.ID)
			}
		}
	}
	return ids
}

// tokenChange says which tokens were issued and revoked between two
// token files ("" when none): IDs, users and scopes, never a hash.
func tokenChange(old, cur *tokens.Set) string {
	before := map[string]tokens.Record{}
	for _, r := range old.Tokens {
		before[r.ID] = r
	}
	var issued, revoked, removed []string
	now := map[string]bool{}
	for _, r := range cur.Tokens {
		now[r.ID] = true
		o, ok := before[r.ID]
		desc := r.ID + " (user " + r.User + ", " + string(r.Scope) + ")"
		if !ok {
			issued = append(issued, desc)
		}
		if !r.Revoked.IsZero() && (!ok || o.Revoked.IsZero()) {
			revoked = append(revoked, desc)
		}
	}
	for id, r := range before {
		if !now[id] {
			removed = append(removed, id+" (user "+r.User+")")
		}
	}
	var parts []string
	for _, l := range []struct {
		verb string
		ids  []string
	}{{"issued", issued}, {"revoked", revoked}, {"removed", removed}} {
		if len(l.ids) > 0 {
			slices.Sort(l.ids)
			parts = append(parts, "tokens "+l.verb+": "+strings.Join(l.ids, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

func (s *Server) isPrivate(uid string) bool { return s.private[uid] }

// service is the archive's service as every front end gets it: audited
// (the records of what requestors do), then the audit policy (refusal
// while the trail cannot be written), then the permissions.
func (s *Server) service() archive.Service {
	svc := s.auditGated(authorized{metered{s.archive, s.mx}})
	if s.audit == nil {
		return svc
	}
	return audited{svc: svc, rec: s.record, ward: s.wardNode}
}

// handlers are the DIMSE services the archive provides, behind the
// policy's per-association checks.
func (s *Server) handlers() dimse.Handlers {
	fe := &dimsearchive.Service{Archive: s.service(), Principal: s.principalOf}
	return fe.Handlers()
}

// acceptor builds the negotiation: Verification and every Storage SOP
// Class (plus configured private ones), with the configured transfer
// syntax preference.
func (s *Server) acceptor() *assoc.Acceptor {
	c := s.Config
	private := map[string]bool{}
	for _, u := range c.DICOM.PrivateSOPClasses {
		private[u] = true
	}
	s.private = private
	acceptCompressed := c.DICOM.AcceptCompressed == nil || *c.DICOM.AcceptCompressed
	native := []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}
	anyValid := func(ts string) bool { return dicom.LookupTransferSyntax(ts) != nil }
	anyNative := func(ts string) bool {
		t := dicom.LookupTransferSyntax(ts)
		return t != nil && dicom.IsUncompressed(t)
	}
	h := s.handlers()
	return &assoc.Acceptor{
		AETitle: c.AETitle,
		TransferSyntaxes: func(rq *pdu.AssociateRQ, remote net.Addr, abstract string) ([]string, func(string) bool, bool) {
			switch qr := dimse.QRCommand(abstract); {
			case abstract == dimse.VerificationSOPClass:
				return native, nil, true
			case qr == dimse.CFindRQ && h.Find != nil, (qr == dimse.CMoveRQ || qr == dimse.CGetRQ) && h.Retrieve != nil:
				return native, nil, true
			case dicom.IsStorageSOPClass(abstract) || private[abstract]:
				if acceptCompressed {
					return c.DICOM.TransferSyntaxes, anyValid, true
				}
				return c.DICOM.TransferSyntaxes, anyNative, true
			}
			return nil, nil, false
		},
		// C-GET retrieves into the requestor: it may take the SCP role for
		// the storage SOP classes.
		SCPRole: func(abstract string) bool {
			return h.Retrieve != nil && (dicom.IsStorageSOPClass(abstract) || private[abstract])
		},
		MaxPDULength:              c.DICOM.MaxPDULength,
		ImplementationClassUID:    dicom.ImplementationClassUID,
		ImplementationVersionName: dicom.ImplementationVersionName,
	}
}

func (s *Server) assocConfig() assoc.Config {
	c := s.Config
	return assoc.Config{
		AETitle:                   c.AETitle,
		MaxPDULength:              c.DICOM.MaxPDULength,
		ARTIMTimeout:              c.DICOM.ARTIMTimeout.Duration,
		IdleTimeout:               c.DICOM.IdleTimeout.Duration,
		ImplementationClassUID:    dicom.ImplementationClassUID,
		ImplementationVersionName: dicom.ImplementationVersionName,
		Logger:                    s.Logger,
	}
}

// Serve accepts associations on every listener (plain and, when
// configured, TLS) until ctx is cancelled, then stops accepting on all of
// them, lets in-flight associations finish for ShutdownGrace, aborts the
// rest and closes the stores. A store in flight is either committed before
// its response or aborted with nothing left behind. Accept errors do not
// stop it (connlimit.go).
func (s *Server) Serve(ctx context.Context) error {
	lns := []net.Listener{s.ln}
	attrs := []any{"aet", s.Config.AETitle, "dicom", s.ln.Addr().String()}
	if s.tlsLn != nil {
		lns = append(lns, s.tlsLn)
		attrs = append(attrs, "dicom_tls", s.tlsLn.Addr().String(), "tls_client_certs", s.Config.DICOM.TLSClientCA != "")
	}
	if s.webLn != nil {
		scheme := "http"
		if s.webTLS != nil {
			scheme = "https"
		}
		attrs = append(attrs, "web", scheme+"://"+s.webLn.Addr().String())
	}
	s.Logger.Info("ward serving", append(attrs, "data", s.Config.DataDir)...)
	var closeOnce sync.Once
	closeAll := func() {
		closeOnce.Do(func() {
			for _, ln := range lns {
				ln.Close()
			}
			if s.adminLn != nil {
				s.adminLn.Close()
			}
		})
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()
	acfg := s.assocConfig()
	disp := &dimse.Dispatcher{Handlers: s.handlers(), Logger: s.Logger, Requestor: acfg, DialDestination: s.dialDestination, Observe: s.mx.observeDIMSE}
	if s.audit != nil {
		s.record(audit.ApplicationActivity(s.wardNode(), true, time.Now()))
	}
	s.startOps(ctx)
	var loops sync.WaitGroup
	loops.Add(1)
	go func() { defer loops.Done(); s.serveAdmin(ctx) }()
	loops.Add(1)
	go func() { defer loops.Done(); s.serveWeb(ctx) }()
	loops.Add(1)
	go func() { defer loops.Done(); s.watchShared(ctx) }()
	loops.Add(1)
	go func() { defer loops.Done(); s.retentionLoop(ctx) }()
	for _, ln := range lns {
		loops.Add(1)
		go func() {
			defer loops.Done()
			s.acceptLoop(ctx, ln, ln == s.tlsLn, acfg, disp)
			closeAll()
		}()
	}
	loops.Wait()
	s.shutdown()
	return nil
}

// acceptLoop accepts connections on ln and serves each as an association
// until ctx is cancelled or ln is closed. An accept error never ends it
// (it waits and tries again); each connection is judged against the
// budget before a goroutine is started for it (connlimit.go). On the TLS
// listener (isTLS) the handshake runs in that goroutine.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, isTLS bool, acfg assoc.Config, disp *dimse.Dispatcher) {
	loopback := policy.AddrOf(ln.Addr()).IsLoopback()
	var backoff acceptBackoff
	for {
		raw := s.acceptWithBackoff(ctx, ln, &backoff)
		if raw == nil {
			return
		}
		p := s.admitConn(raw, isTLS)
		if p == nil {
			continue
		}
		cn := newClosingConn(raw)
		s.track(cn, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// The place is given back once the socket is closed, not
			// merely once the association ends: after a rejection or a
			// release, the upper layer waits for the peer to close.
			defer p.done()
			defer cn.waitClosed(s.Config.DICOM.ARTIMTimeout.Duration + time.Second)
			defer s.track(cn, false)
			conn := net.Conn(cn)
			if p.balanced {
				// The PROXY header precedes the TLS handshake (proxy.go).
				var ok bool
				if conn, ok = s.fromBalancer(cn, p, isTLS); !ok {
					return
				}
			}
			if isTLS {
				conn = tlsServer(conn, s.tlsConf)
			}
			if tc, ok := conn.(*tls.Conn); ok && !s.handshake(tc) {
				conn.Close()
				return
			}
			// Through a balancer the listener's being on loopback says
			// nothing of the client's (no loopback any-AE, the plaintext
			// rule by the client's address).
			cs := s.newSession(conn, loopback && !p.balanced, p)
			defer cs.release()
			a, err := assoc.Serve(conn, acfg, cs)
			s.afterNegotiation(cs, conn.RemoteAddr(), err)
			if err != nil {
				level := slog.LevelInfo
				if cs.rq == nil {
					// Silent, closed or not DICOM: nothing to tell (a flood
					// of them is summed up by the refusals).
					level = slog.LevelDebug
				}
				s.Logger.Log(context.Background(), level, "association not established", "remote", conn.RemoteAddr().String(), "reason", err.Error())
				return
			}
			// Established: the idle timer takes over from the deadlines
			// of set-up.
			_ = conn.SetReadDeadline(time.Time{})
			a.SetGrant(cs.grant)
			s.trackAssoc(a, true)
			defer s.trackAssoc(a, false)
			// The association is one session for the audit trail: its
			// stored instances are recorded together when it ends.
			sctx, session := archive.WithSession(context.Background())
			if err := disp.Serve(sctx, a); err != nil {
				s.mx.association(assocAborted)
			}
			session.End()
		}()
	}
}

// handshake completes a TLS handshake within the first-PDU deadline set
// at accept, so that the client certificate is known before negotiation
// and a failed handshake (no or a foreign client certificate, an old
// protocol version, weak cipher suites only) is logged and audited like a
// refused association.
func (s *Server) handshake(c *tls.Conn) bool {
	err := c.Handshake()
	if err == nil {
		return true
	}
	var ne net.Error
	if errors.Is(err, io.EOF) || (errors.As(err, &ne) && ne.Timeout()) {
		// A port probe or a silent client: nothing to authenticate.
		s.Logger.Debug("TLS connection closed before the handshake completed", "remote", c.RemoteAddr().String(), "err", err.Error())
		return false
	}
	reason := "TLS handshake failed: " + err.Error()
	s.Logger.Warn("association refused", "remote", c.RemoteAddr().String(), "reason", reason)
	now := time.Now()
	peer := audit.Node{Addr: hostOf(c.RemoteAddr())}
	s.record(audit.Authentication(s.wardNode(), peer, false, reason, now))
	s.record(audit.SecurityAlert(s.wardNode(), peer, reason, now))
	if src := remoteAddr(c); src.IsValid() {
		s.lockoutOnFailure(src, now)
	}
	return false
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

func (s *Server) trackAssoc(a *assoc.Association, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.active[a] = struct{}{}
	} else {
		delete(s.active, a)
	}
}

func (s *Server) shutdown() {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	if n > 0 {
		s.Logger.Info("stopping: waiting for associations in progress", "count", n, "grace", ShutdownGrace)
	}
	select {
	case <-done:
	case <-time.After(ShutdownGrace):
		s.mu.Lock()
		for a := range s.active {
			go a.Abort()
		}
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	if s.audit != nil {
		s.record(audit.ApplicationActivity(s.wardNode(), false, time.Now()))
	}
	s.stopOps()
	s.closeStores()
	s.Logger.Info("ward stopped")
}
