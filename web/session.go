package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/ward-pacs/ward/archive"
)

// Browser sessions: a user signs in with a passcode (signin.go) and gets
// a session cookie (HttpOnly, SameSite=Strict; Secure and __Host- over
// HTTPS) that authenticates the viewer's DICOMweb requests. A session
// ends at sign-out, after Idle without a request, after Absolute in any
// case, and at once when its user loses every role or is removed (the
// principal is looked up again on every request). Requests that change
// state must also carry the session's CSRF token (X-CSRF-Token), which
// only pages of Ward's own origin can read (GET /session).
//
// Sessions are kept by the SHA-256 of their ID (a memory dump or a copy
// of the database does not hand out live cookies) in a SessionStore: in
// memory by default (a restart signs everyone out), or, for the nodes of
// a cluster, in their shared index (store/pgshared), so that a browser
// signed in through one node is signed in through every node and a
// sign-out anywhere ends the session everywhere.

// Session defaults.
const (
	DefaultSessionIdle     = 30 * time.Minute
	DefaultSessionAbsolute = 12 * time.Hour
	// DefaultMaxSessions bounds the sessions kept in memory; signing in
	// beyond it ends the session least recently used.
	DefaultMaxSessions = 10000
)

// SessionOptions configure sessions.
type SessionOptions struct {
	Idle, Absolute time.Duration
	Max            int
	// Store keeps the sessions; nil: in memory, bounded by Max.
	Store SessionStore
}

// SessionStore keeps sessions by key, the SHA-256 of the session's ID;
// body is the front end's encoding of a session, opaque to the store.
// Its methods are safe for concurrent use.
type SessionStore interface {
	// CreateSession stores a new session of user, alive until expires at
	// the latest.
	CreateSession(ctx context.Context, key [32]byte, user string, body []byte, now, expires time.Time) error
	// LookupSession returns the body of the session alive at now (nil if
	// none: past its expiry, or unseen for idle) and marks it seen.
	LookupSession(ctx context.Context, key [32]byte, now time.Time, idle time.Duration) ([]byte, error)
	// EndSession removes the session and returns its body (nil if none).
	EndSession(ctx context.Context, key [32]byte) ([]byte, error)
	// EndUserSessions removes every session of user.
	EndUserSessions(ctx context.Context, user string) error
}

// sessionTimeout bounds one call on the session store.
const sessionTimeout = 5 * time.Second

// errSessions: the session store failed (the shared index is out of
// reach): the request is answered 503, never as if signed out.
var errSessions = errors.New("sessions are unavailable for now: try again shortly")

// session is one signed-in browser.
type session struct {
	user string
	// external: signed in through the OpenID provider, with roles (Ward's
	// names) from its ID token; else a local user, whose roles are looked
	// up on every request.
	external bool
	roles    []string
	csrf     string
	created  time.Time
}

// sessionBody is a session as a SessionStore keeps it.
type sessionBody struct {
	User     string    `json:"user"`
	External bool      `json:"external,omitempty"`
	Roles    []string  `json:"roles,omitempty"`
	CSRF     string    `json:"csrf"`
	Created  time.Time `json:"created"`
}

func (ss *session) encode() []byte {
	b, _ := json.Marshal(sessionBody{User: ss.user, External: ss.external, Roles: ss.roles, CSRF: ss.csrf, Created: ss.created})
	return b
}

func decodeSession(b []byte) *session {
	var sb sessionBody
	if json.Unmarshal(b, &sb) != nil || sb.User == "" || sb.CSRF == "" {
		return nil
	}
	return &session{user: sb.User, external: sb.External, roles: sb.Roles, csrf: sb.CSRF, created: sb.Created}
}

// sessions creates, finds and ends sessions in their store.
type sessions struct {
	opts  SessionOptions
	now   func() time.Time
	store SessionStore
}

func newSessions(o SessionOptions) *sessions {
	if o.Idle <= 0 {
		o.Idle = DefaultSessionIdle
	}
	if o.Absolute <= 0 {
		o.Absolute = DefaultSessionAbsolute
	}
	if o.Max <= 0 {
		o.Max = DefaultMaxSessions
	}
	st := o.Store
	if st == nil {
		st = NewMemorySessions(o.Max)
	}
	return &sessions{opts: o, now: time.Now, store: st}
}

// randomToken is 32 bytes from the system's random source, base64url.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("web: no random source: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(id string) [32]byte { return sha256.Sum256([]byte(id)) }

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), sessionTimeout)
}

// create starts a session for user (external: signed in through the
// OpenID provider with roles) and returns its ID.
func (s *sessions) create(user string, external bool, roles []string) (string, *session, error) {
	id := randomToken()
	now := s.now()
	ss := &session{user: user, external: external, roles: roles, csrf: randomToken(), created: now}
	ctx, cancel := storeCtx()
	defer cancel()
	if err := s.store.CreateSession(ctx, sessionKey(id), user, ss.encode(), now, now.Add(s.opts.Absolute)); err != nil {
		return "", nil, fmt.Errorf("%w (%v)", errSessions, err)
	}
	return id, ss, nil
}

// lookup returns the live session of id and marks it used; nil when there
// is none (expired ones are dropped).
func (s *sessions) lookup(id string) (*session, error) {
	if id == "" {
		return nil, nil
	}
	ctx, cancel := storeCtx()
	defer cancel()
	now := s.now()
	b, err := s.store.LookupSession(ctx, sessionKey(id), now, s.opts.Idle)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errSessions, err)
	}
	if b == nil {
		return nil, nil
	}
	ss := decodeSession(b)
	if ss == nil || now.Sub(ss.created) >= s.opts.Absolute {
		return nil, nil
	}
	return ss, nil
}

// end ends the session of id; it returns the session ended, nil if none.
func (s *sessions) end(id string) (*session, error) {
	ctx, cancel := storeCtx()
	defer cancel()
	b, err := s.store.EndSession(ctx, sessionKey(id))
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errSessions, err)
	}
	if b == nil {
		return nil, nil
	}
	return decodeSession(b), nil
}

// endUser ends every session of user.
func (s *sessions) endUser(user string) error {
	ctx, cancel := storeCtx()
	defer cancel()
	if err := s.store.EndUserSessions(ctx, user); err != nil {
		return fmt.Errorf("%w (%v)", errSessions, err)
	}
	return nil
}

// MemorySessions is the SessionStore of a single Ward: sessions in
// memory, at most Max of them (beyond it the least recently used ends).
type MemorySessions struct {
	max  int
	mu   sync.Mutex
	byID map[[32]byte]*memSession
}

type memSession struct {
	user          string
	body          []byte
	seen, expires time.Time
}

// NewMemorySessions returns an empty in-memory store of at most max
// sessions.
func NewMemorySessions(max int) *MemorySessions {
	return &MemorySessions{max: max, byID: map[[32]byte]*memSession{}}
}

// CreateSession implements SessionStore.
func (m *MemorySessions) CreateSession(_ context.Context, key [32]byte, user string, body []byte, now, expires time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.byID) >= m.max {
		m.evictLocked(now)
	}
	m.byID[key] = &memSession{user: user, body: body, seen: now, expires: expires}
	return nil
}

// evictLocked drops expired sessions, and if none was, the least
// recently used one.
func (m *MemorySessions) evictLocked(now time.Time) {
	var oldestKey [32]byte
	var oldest *memSession
	n := len(m.byID)
	for k, ss := range m.byID {
		if !now.Before(ss.expires) {
			delete(m.byID, k)
			continue
		}
		if oldest == nil || ss.seen.Before(oldest.seen) {
			oldestKey, oldest = k, ss
		}
	}
	if len(m.byID) == n && oldest != nil {
		delete(m.byID, oldestKey)
	}
}

// LookupSession implements SessionStore.
func (m *MemorySessions) LookupSession(_ context.Context, key [32]byte, now time.Time, idle time.Duration) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ss := m.byID[key]
	if ss == nil {
		return nil, nil
	}
	if !now.Before(ss.expires) || now.Sub(ss.seen) >= idle {
		delete(m.byID, key)
		return nil, nil
	}
	ss.seen = now
	return ss.body, nil
}

// EndSession implements SessionStore.
func (m *MemorySessions) EndSession(_ context.Context, key [32]byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ss := m.byID[key]
	delete(m.byID, key)
	if ss == nil {
		return nil, nil
	}
	return ss.body, nil
}

// EndUserSessions implements SessionStore.
func (m *MemorySessions) EndUserSessions(_ context.Context, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, ss := range m.byID {
		if ss.user == user {
			delete(m.byID, k)
		}
	}
	return nil
}

// The cookies. Over HTTPS the __Host- prefix pins the session cookie to
// this origin (Secure, Path=/, no Domain: no sibling host can set it).
func (h *Handler) sessionCookieName() string {
	if h.cfg.TLS {
		return "__Host-ward-session"
	}
	return "ward-session"
}

func (h *Handler) setSessionCookie(w http.ResponseWriter, id string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: h.sessionCookieName(), Value: id, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: h.cfg.TLS, SameSite: http.SameSiteStrictMode,
	})
}

// sessionOf returns the request's session and its ID, nil when it has
// none that is live; an error when the session store failed.
func (h *Handler) sessionOf(r *http.Request) (*session, string, error) {
	c, err := r.Cookie(h.sessionCookieName())
	if err != nil || len(c.Value) > 128 {
		return nil, "", nil
	}
	ss, err := h.sessions.lookup(c.Value)
	if err != nil {
		h.cfg.Logger.Error("session store failed", "err", err.Error())
	}
	return ss, c.Value, err
}

// errCSRF: a state-changing request under a session without its CSRF
// token.
var errCSRF = errors.New("this request changes state and needs the session's CSRF token (X-CSRF-Token, from GET /session)")

// safeMethod: the methods that change nothing.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func equalSecret(a, b string) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// sessionPrincipal is the principal of a request that carries a live
// session: its user as the Principals callback gives it now (nil when
// the user has no role any more, which ends the session). A
// state-changing request must carry the CSRF token.
func (h *Handler) sessionPrincipal(r *http.Request) (*archive.Principal, *session, error) {
	ss, id, err := h.sessionOf(r)
	if err != nil {
		return nil, nil, err
	}
	if ss == nil {
		return nil, nil, ErrNoCredentials
	}
	var p *archive.Principal
	switch {
	case h.cfg.Accounts == nil:
	case ss.external:
		p = h.cfg.Accounts.External(nil, ss.user, ss.roles)
	default:
		p = h.cfg.Accounts.Principal(ss.user)
	}
	if p == nil {
		if _, err := h.sessions.end(id); err != nil {
			return nil, nil, err
		}
		return nil, nil, ErrNoCredentials
	}
	if !safeMethod(r.Method) && !equalSecret(r.Header.Get("X-CSRF-Token"), ss.csrf) {
		return nil, nil, errCSRF
	}
	return p, ss, nil
}

// sessionID hashes nothing secret into logs: a short fingerprint of a
// session for audit descriptions.
func sessionID(id string) string {
	k := sessionKey(id)
	return hex.EncodeToString(k[:4])
}
