// Package web is Ward's HTTP front end: every request is authenticated
// (a bearer token today; browser sessions with the viewer), carries its
// principal and origin into the archive's service (which the policy and
// the audit trail wrap once, for every front end), and gets the same
// hardening whatever it asks for: security headers, CORS only for listed
// origins, a body limit with a clear 413, and bounded parsing.
//
// The DICOMweb handlers (PS3.18) live in web/dicomweb and are mounted on
// a Handler's mux; the errors of the archive become HTTP statuses in one
// table (errors.go).
package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/archive"
)

// Authentication failures an Authenticator returns.
var (
	// ErrNoCredentials: the request carries none (answered 401 with a
	// Bearer challenge, not counted as a failure).
	ErrNoCredentials = errors.New("authentication required")
	// ErrBadCredentials: the credentials are wrong, expired or revoked
	// (answered 401; counted against the source and the account).
	ErrBadCredentials = errors.New("invalid credentials")
)

// LockedOut is an Authenticator's answer while the source or the account
// is locked out after repeated failures (answered 429 with Retry-After).
type LockedOut struct{ Until time.Time }

func (l *LockedOut) Error() string {
	return "too many failed sign-ins: locked out until " + l.Until.UTC().Format(time.RFC3339)
}

// Authenticator verifies a request's credentials and returns its
// principal (a user with roles), or ErrNoCredentials, an error wrapping
// ErrBadCredentials (its text, without secrets, reaches the client) or a
// *LockedOut. It counts failures and records them in the audit trail.
type Authenticator interface {
	Authenticate(r *http.Request) (*archive.Principal, error)
}

// Config configures a Handler.
type Config struct {
	// Authenticator verifies every request but the anonymous ones
	// (/healthz); nil refuses them all.
	Authenticator Authenticator
	// BaseURL is where clients reach Ward (absolute URLs are built from
	// it); nil: the request's scheme and Host.
	BaseURL *url.URL
	// AllowOrigins are the origins allowed to call across origins (CORS);
	// none: CORS headers are never sent.
	AllowOrigins []string
	// MaxBody bounds a request body in bytes (0: no body is accepted).
	MaxBody int64
	// Accounts verifies browser sign-ins and gives a session's principal
	// (session.go, signin.go); nil: no sign-in, tokens only.
	Accounts Accounts
	// OIDC enables OpenID Connect sign-in (oidc.go); nil: none.
	OIDC *OIDCConfig
	// Setup creates the first administrator on first run (setup.go);
	// nil: no set-up.
	Setup Setup
	// Sessions bound browser sessions (zero: the defaults).
	Sessions SessionOptions
	// TLS: the listener serves HTTPS (HSTS is sent).
	TLS    bool
	Logger *slog.Logger
}

// Handler is the HTTP front end: Mux holds the routes (authenticated
// unless registered with Anonymous), and ServeHTTP applies the hardening
// around them.
type Handler struct {
	cfg      Config
	mux      *http.ServeMux
	seq      atomic.Uint64
	sessions *sessions
	oidc     *oidcClient
}

// New returns a Handler with no routes but /healthz.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), sessions: newSessions(cfg.Sessions), oidc: newOIDC(cfg.OIDC)}
	h.registerSignIn()
	h.registerSetup()
	h.registerOIDC()
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return h
}

// Handle registers an authenticated route: fn runs only for a request
// whose credentials verified, with its principal and origin in the
// request's context.
func (h *Handler) Handle(pattern string, fn http.HandlerFunc) {
	h.mux.Handle(pattern, h.authenticated(fn))
}

// Authenticated wraps fn as Handle does, for a handler that decides per
// request whether to serve anonymously (the viewer: its static files are
// anonymous, its pages are not).
func (h *Handler) Authenticated(fn http.HandlerFunc) http.Handler { return h.authenticated(fn) }

// Anonymous registers a route served without credentials (a health probe,
// the viewer's static shell): it must not reach patient data.
func (h *Handler) Anonymous(pattern string, fn http.Handler) { h.mux.Handle(pattern, fn) }

// Logger is the handler's logger.
func (h *Handler) Logger() *slog.Logger { return h.cfg.Logger }

// MaxBody is the body limit in bytes.
func (h *Handler) MaxBody() int64 { return h.cfg.MaxBody }

// ServeHTTP implements http.Handler: JSON answers are gzip-compressed
// when the request allows it (gzip.go), then the hardening applies.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w, done := withGzip(w, r) // JSON answers only (gzip.go)
	defer done()
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	if h.cfg.TLS {
		hd.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if !h.cors(w, r, origin) {
			return
		}
	}
	if r.ContentLength > h.cfg.MaxBody {
		Fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is over the limit of %d bytes ([web] max_body)", r.ContentLength, h.cfg.MaxBody))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBody)
	if strings.Contains(r.URL.Path, "//") {
		// Clients that join a base ending in / with a path starting with
		// one (Orthanc's DICOMweb client) are served, not redirected (a
		// redirected POST loses its body).
		u := *r.URL
		for strings.Contains(u.Path, "//") {
			u.Path = strings.ReplaceAll(u.Path, "//", "/")
		}
		u.RawPath = ""
		r2 := *r
		r2.URL = &u
		r = &r2
	}
	h.mux.ServeHTTP(w, r)
}

// cors handles a cross-origin request: it adds the CORS headers for an
// allowed origin and answers its preflight; a preflight from any other
// origin is refused. It reports whether to go on serving the request.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request, origin string) bool {
	allowed := slices.Contains(h.cfg.AllowOrigins, origin)
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	w.Header().Add("Vary", "Origin")
	if !allowed {
		if preflight {
			Fail(w, r, http.StatusForbidden, "cross-origin requests from "+origin+" are not allowed ([web] allow_origins)")
			return false
		}
		return true // no CORS headers: the browser keeps the answer from the page
	}
	hd := w.Header()
	hd.Set("Access-Control-Allow-Origin", origin)
	hd.Set("Access-Control-Expose-Headers", "Warning, Content-Location, Location, X-Total-Count")
	if preflight {
		hd.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Accept, Content-Type")
		hd.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// authenticated runs fn with the request's principal: its browser
// session's when it has no Authorization header and a live session, else
// what the Authenticator says (a bearer token's). Without either it answers 401, or sends a browser asking for
// a page to sign-in; a refused token 401, a lockout 429.
func (h *Handler) authenticated(fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p *archive.Principal
		err := ErrNoCredentials
		if r.Header.Get("Authorization") == "" {
			p, _, err = h.sessionPrincipal(r)
		}
		if errors.Is(err, ErrNoCredentials) && h.cfg.Authenticator != nil {
			p, err = h.cfg.Authenticator.Authenticate(r)
		}
		var lo *LockedOut
		switch {
		case errors.As(err, &lo):
			secs := int(time.Until(lo.Until).Seconds()) + 1
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			Fail(w, r, http.StatusTooManyRequests, lo.Error())
			return
		case errors.Is(err, errCSRF):
			Fail(w, r, http.StatusForbidden, err.Error())
			return
		case errors.Is(err, errSessions):
			w.Header().Set("Retry-After", "5")
			Fail(w, r, http.StatusServiceUnavailable, errSessions.Error())
			return
		case errors.Is(err, ErrNoCredentials) && wantsPage(r):
			http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		case errors.Is(err, ErrNoCredentials):
			w.Header().Set("WWW-Authenticate", `Bearer realm="ward"`)
			Fail(w, r, http.StatusUnauthorized, "authentication required: sign in, or send Authorization: Bearer TOKEN (ward token issue USER)")
			return
		case err != nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="ward", error="invalid_token"`)
			Fail(w, r, http.StatusUnauthorized, err.Error())
			return
		case p == nil:
			Fail(w, r, http.StatusInternalServerError, "no principal")
			return
		}
		ctx := archive.WithPrincipal(r.Context(), p)
		ctx = archive.WithOrigin(ctx, archive.Origin{Addr: r.RemoteAddr, Conn: "http:" + p.Name + "@" + r.RemoteAddr + "(" + strconv.FormatUint(h.seq.Add(1), 10) + ")"})
		fn(w, r.WithContext(ctx))
	})
}

// wantsPage reports whether r is a browser navigating to a page (not an
// API call): such a request without credentials goes to sign-in.
func wantsPage(r *http.Request) bool {
	if r.Method != http.MethodGet || strings.HasPrefix(r.URL.Path, "/dicom-web/") || r.URL.Path == "/wado" {
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func itoa(n int) string { return strconv.Itoa(n) }

// BaseURL is the base clients reach Ward at for r: the configured one, or
// r's scheme and Host. It has no trailing slash.
func (h *Handler) BaseURL(r *http.Request) string {
	if h.cfg.BaseURL != nil {
		return strings.TrimSuffix(h.cfg.BaseURL.String(), "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host
}

// SourceAddr is the request's source address (without port), the zero
// Addr when it cannot be read.
func SourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Principal is the request's principal (nil on anonymous routes).
func Principal(ctx context.Context) *archive.Principal { return archive.PrincipalFrom(ctx) }
