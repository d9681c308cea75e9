package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/tokens"
	"github.com/ward-pacs/ward/tlsprofile"
	"github.com/ward-pacs/ward/web"
	"github.com/ward-pacs/ward/web/dicomweb"
	webviewer "github.com/ward-pacs/ward/web/viewer"
)

// The web front end ([web]): DICOMweb over HTTP on loopback, HTTPS beyond
// it (config.Validate refuses plain HTTP there), behind the same service
// wrappers as DIMSE. Requests authenticate with API tokens (ward token
// issue): failures count against the source and the token, in the same
// lockout as DIMSE identities, and are audited (User Authentication,
// Security Alert when one locks a source or token out).

// Bounds of the HTTP server.
const (
	webReadHeaderTimeout = 10 * time.Second
	webIdleTimeout       = 2 * time.Minute
	webMaxHeaderBytes    = 64 << 10
	// webMaxConns bounds open HTTP connections: more wait in the kernel's
	// backlog.
	webMaxConns = 512
	// webMaxConnsPerSource bounds them per source address.
	webMaxConnsPerSource = 64
)

// listenWeb binds the HTTP listener, unless [web] listen is off.
func (s *Server) listenWeb() error {
	c := s.Config
	if c.Web.Off() {
		return nil
	}
	if cert, key := c.WebTLS(); cert != "" {
		kp, err := tlsprofile.LoadKeyPair(cert, key)
		if err != nil {
			return fmt.Errorf("web tls_cert %s / tls_key %s: %w", cert, key, err)
		}
		tc, err := tlsprofile.Server(tlsprofile.ServerOptions{Certificate: kp})
		if err != nil {
			return fmt.Errorf("web tls: %w", err)
		}
		// Browsers would prompt for a certificate: web clients
		// authenticate by token or session.
		tc.ClientAuth = tls.NoClientCert
		s.webTLS = tc
	}
	if c.Web.OIDC.Issuer != "" {
		secret, err := c.Web.OIDC.ReadClientSecret()
		if err != nil {
			return err
		}
		s.oidcSecret = secret
	}
	ln, err := net.Listen("tcp", c.Web.Listen)
	if err != nil {
		return fmt.Errorf("web listener: %w", err)
	}
	s.webLn = ln
	return nil
}

// WebAddr is the HTTP listener's address, nil when it is off.
func (s *Server) WebAddr() net.Addr {
	if s.webLn == nil {
		return nil
	}
	return s.webLn.Addr()
}

// webHandler is the web front end: DICOMweb on the audited, policed
// service.
func (s *Server) webHandler() (http.Handler, error) {
	c := s.Config
	maxBody, err := c.Web.MaxBodyBytes()
	if err != nil {
		return nil, err
	}
	cfg := web.Config{
		Authenticator: webAuth{s},
		Accounts:      webAuth{s},
		Setup:         s.startSetup(),
		AllowOrigins:  c.Web.AllowOrigins,
		MaxBody:       maxBody,
		TLS:           s.webTLS != nil,
		Logger:        s.Logger,
	}
	if s.shared != nil {
		// A browser signed in through one node is signed in through all.
		cfg.Sessions.Store = s.shared
	}
	if c.Web.BaseURL != "" {
		if cfg.BaseURL, err = url.Parse(c.Web.BaseURL); err != nil {
			return nil, fmt.Errorf("web base_url: %w", err)
		}
	}
	if o := c.Web.OIDC; o.Issuer != "" {
		cfg.OIDC = &web.OIDCConfig{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: s.oidcSecret, RolesClaim: o.RolesClaim, RoleMap: o.RoleMap, Scopes: o.Scopes, Label: o.Label}
	}
	h := web.New(cfg)
	maxResults := c.Web.MaxResults
	if maxResults == 0 {
		maxResults = config.DefaultWebMaxResults
	}
	storable := func(uid string) bool { return dicom.IsStorageSOPClass(uid) || s.isPrivate(uid) }
	dicomweb.Register(h, s.service(), dicomweb.Options{MaxResults: maxResults, Storable: storable})
	if s.viewer != nil {
		webviewer.Register(h, s.viewer)
	}
	// Readiness for the load balancer (health.go); /healthz is web's.
	h.Anonymous("GET /readyz", http.HandlerFunc(s.readyz))
	return h, nil
}

// serveWeb serves HTTP until ctx ends, then lets requests in flight finish
// for ShutdownGrace and closes the rest.
func (s *Server) serveWeb(ctx context.Context) {
	if s.webLn == nil {
		return
	}
	fetched := make(chan struct{})
	if s.viewerDist() != "" {
		s.viewer = webviewer.New("the viewer is not installed")
	}
	if s.viewer != nil && s.setupViewer(s.viewer) {
		go func() { defer close(fetched); s.fetchViewer(ctx, s.viewer) }()
	} else {
		close(fetched)
	}
	defer func() { <-fetched }()
	h, err := s.webHandler()
	if err != nil {
		s.Logger.Error("web front end not started", "err", err.Error())
		s.health.webDown.Store(true)
		return
	}
	srv := &http.Server{
		Handler:           s.mx.instrumentHTTP(h),
		ConnState:         s.mx.webConnState,
		ReadHeaderTimeout: webReadHeaderTimeout,
		IdleTimeout:       webIdleTimeout,
		MaxHeaderBytes:    webMaxHeaderBytes,
		TLSConfig:         s.webTLS,
		// TLS handshake failures and the like, at debug level: a port
		// scan must not fill the log.
		ErrorLog:    slog.NewLogLogger(s.Logger.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	b, err := newBalancers(s.Config.Web.ProxyFrom)
	if err != nil {
		s.Logger.Error("web front end not started", "err", err.Error())
		s.health.webDown.Store(true)
		return
	}
	ln := limitListener(s.webLn, webMaxConns, webMaxConnsPerSource).fromBalancers(b, webReadHeaderTimeout, s.Logger)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if s.webTLS != nil {
			err = srv.ServeTLS(ln, "", "") // HTTP/2 and HTTP/1.1, certificate from TLSConfig
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Logger.Error("web listener stopped", "err", err.Error())
			s.health.webDown.Store(true)
		}
	}()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-done
}

// limitListener accepts at most n connections open at once, and at most
// perSource from one source (an IPv6 /64): one client cannot take every
// place with slow requests. A connection over the per-source bound is
// closed at once.
func limitListener(ln net.Listener, n, perSource int) *limitedListener {
	return &limitedListener{Listener: ln, sem: make(chan struct{}, n), perSource: perSource, bySource: map[netip.Addr]int{}, log: slog.New(slog.DiscardHandler)}
}

type limitedListener struct {
	net.Listener
	sem       chan struct{}
	perSource int
	mu        sync.Mutex
	bySource  map[netip.Addr]int

	// balancers send a PROXY header first (proxy.go): their connections
	// count in the total at once and against the client's address once
	// the header, due within headerTimeout, names it.
	balancers     balancers
	headerTimeout time.Duration
	log           *slog.Logger
}

// fromBalancers has l read the PROXY header of connections from b.
func (l *limitedListener) fromBalancers(b balancers, headerTimeout time.Duration, log *slog.Logger) *limitedListener {
	l.balancers, l.headerTimeout, l.log = b, headerTimeout, log
	return l
}

// enterSource counts a connection against src; false when src has
// perSource open already.
func (l *limitedListener) enterSource(src netip.Addr) (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bySource[src] >= l.perSource {
		return nil, false
	}
	l.bySource[src]++
	return func() {
		l.mu.Lock()
		if l.bySource[src]--; l.bySource[src] <= 0 {
			delete(l.bySource, src)
		}
		l.mu.Unlock()
	}, true
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		l.sem <- struct{}{}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.sem
			return nil, err
		}
		src := policy.SourceKey(policy.AddrOf(c.RemoteAddr()))
		if l.balancers.listed(src) {
			return &proxyLazyConn{Conn: &limitedConn{Conn: c, release: func() { <-l.sem }}, l: l, timeout: l.headerTimeout}, nil
		}
		release, ok := l.enterSource(src)
		if !ok {
			c.Close()
			<-l.sem
			continue
		}
		return &limitedConn{Conn: c, release: func() { release(); <-l.sem }}, nil
	}
}

type limitedConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// webAuth authenticates web requests by API token.
type webAuth struct{ s *Server }

// userGrant is what a user's roles allow: through a token, whose scope
// may narrow them, or a browser session (the user itself: write scope).
type userGrant struct {
	p       *tokens.Principal
	session bool
}

func (g userGrant) Allows(perm string) bool { return g.p.Allows(policy.Permission(perm)) }

// userPrincipal is the archive's principal of a user with roles.
func (s *Server) userPrincipal(g userGrant) *archive.Principal {
	names := make([]string, len(g.p.Roles))
	for i, r := range g.p.Roles {
		names[i] = string(r)
	}
	p := &archive.Principal{Kind: archive.User, Name: g.p.User, Roles: names, Grant: g, MaxResults: s.Config.Web.MaxResults}
	if t := s.tokens.Load(); t != nil {
		p.Deidentify = t.deid[g.p.User]
	}
	return p
}

// webSource is a request's source address (IPv4 unmapped; invalid when
// it cannot be read).
func webSource(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// webRefused logs and audits a refused web credential (User
// Authentication, failed), and the lockouts it started: the source's
// (source) and, when it is not zero, the account's or token's (account,
// described by locked).
func (s *Server) webRefused(r *http.Request, who audit.Node, reason string, source, account time.Time, locked string) {
	now := time.Now()
	s.Logger.Info("web authentication failed", "remote", r.RemoteAddr, "reason", reason)
	s.record(audit.Authentication(s.wardNode(), who, false, reason, now))
	if src := webSource(r); src.IsValid() {
		s.auditSourceLockout(src, source, now)
	}
	if !account.IsZero() {
		s.record(audit.SecurityAlert(s.wardNode(), who, fmt.Sprintf("%s locked out until %s after repeated refusals", locked, account.UTC().Format(time.RFC3339)), now))
	}
}

func (a webAuth) Authenticate(r *http.Request) (*archive.Principal, error) {
	s := a.s
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return nil, web.ErrNoCredentials
	}
	scheme, bearer, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, web.ErrNoCredentials
	}
	bearer = strings.TrimSpace(bearer)
	if bearer == "" {
		return nil, web.ErrNoCredentials
	}
	src := webSource(r)
	id := tokens.IDOf(bearer)
	account := ""
	if id != "" {
		account = "token:" + id
	}
	att, lo, err := s.limits.Reserve(r.Context(), src, account)
	if err != nil {
		return nil, err
	}
	if lo != nil {
		return nil, &web.LockedOut{Until: lo.Until}
	}
	p, verr := s.TokenVerifier().Verify(bearer)
	if verr != nil {
		acct, source := att.Done(policy.Refused, "")
		reason := "web request with a bearer token refused: " + verr.Error()
		if id != "" {
			reason += " (token " + id + ")"
		}
		s.webRefused(r, audit.Node{Addr: src.String()}, reason, source, acct, "token "+id)
		return nil, fmt.Errorf("%w: %v", web.ErrBadCredentials, verr)
	}
	att.Done(policy.Verified, "")
	return s.userPrincipal(userGrant{p: p}), nil
}

// Principal implements web.Accounts: user's principal with the roles in
// effect now (nil without a role: its sessions end).
func (a webAuth) Principal(user string) *archive.Principal {
	t := a.s.tokens.Load()
	if t == nil || len(t.roles[user]) == 0 {
		return nil
	}
	return a.s.userPrincipal(userGrant{p: &tokens.Principal{User: user, Roles: t.roles[user], Scope: tokens.Write}, session: true})
}

// SignIn implements web.Accounts: the user's passcode checked like a DIMSE
// identity's (the same hashes, the same per-account and per-source
// lockout), audited as User Authentication.
func (a webAuth) SignIn(r *http.Request, user, passcode string) (*archive.Principal, error) {
	s := a.s
	src := webSource(r)
	att, lo, err := s.limits.Reserve(r.Context(), src, user)
	if err != nil {
		return nil, err
	}
	who := audit.Node{AETitle: user, Addr: src.String()}
	if lo != nil {
		return nil, &web.LockedOut{Until: lo.Until}
	}
	t := s.tokens.Load()
	var verr error
	if t == nil || t.identity == nil {
		verr = errors.New("no users")
	} else {
		_, _, verr = t.identity.Verify(r.Context(), &policy.Credential{Type: policy.UsernamePasscode, Primary: []byte(user), Secondary: []byte(passcode)})
	}
	p := a.Principal(user)
	if verr == nil && p == nil {
		verr = errors.New("the user has no role")
	}
	if verr != nil {
		acct, source := att.Done(policy.Refused, "")
		s.webRefused(r, who, "browser sign-in refused: "+verr.Error(), source, acct, fmt.Sprintf("account %q", policy.ShortName(user)))
		return nil, fmt.Errorf("%w: %v", web.ErrBadCredentials, verr)
	}
	att.Done(policy.Verified, "")
	s.record(audit.Authentication(s.wardNode(), who, true, "browser sign-in", time.Now()))
	return p, nil
}

// External implements web.Accounts: a user the OpenID provider vouched
// for, with Ward roles from its ID token; at sign-in (r not nil) the
// success is audited.
func (a webAuth) External(r *http.Request, user string, names []string) *archive.Principal {
	var roles []policy.Role
	for _, n := range names {
		if role, err := policy.ParseRole(n); err == nil {
			roles = append(roles, role)
		}
	}
	if len(roles) == 0 {
		return nil
	}
	if r != nil {
		a.s.record(audit.Authentication(a.s.wardNode(), audit.Node{AETitle: user, Addr: web.SourceAddr(r)}, true, "single sign-on (OpenID Connect), roles "+strings.Join(names, ","), time.Now()))
	}
	return a.s.userPrincipal(userGrant{p: &tokens.Principal{User: user, Roles: roles, Scope: tokens.Write}, session: true})
}

// ExternalFailed implements web.Accounts: a refused OpenID sign-in, counted
// against its source like a wrong passcode.
func (a webAuth) ExternalFailed(r *http.Request, user, why string) {
	s := a.s
	var source time.Time
	if src := webSource(r); src.IsValid() {
		source = s.limits.Failed(src)
	}
	s.webRefused(r, audit.Node{AETitle: user, Addr: web.SourceAddr(r)}, "single sign-on refused: "+why, source, time.Time{}, "")
}

// SignedOut implements web.Accounts.
func (a webAuth) SignedOut(r *http.Request, user, why string) {
	a.s.record(audit.Logout(a.s.wardNode(), audit.Node{AETitle: user, Addr: web.SourceAddr(r)}, why, time.Now()))
}
