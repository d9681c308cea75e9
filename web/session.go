package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
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
// Sessions are kept in memory, by the SHA-256 of their ID (a memory dump
// does not hand out live cookies); a restart signs everyone out.

// Session defaults.
const (
	DefaultSessionIdle     = 30 * time.Minute
	DefaultSessionAbsolute = 12 * time.Hour
	// DefaultMaxSessions bounds the sessions kept; signing in beyond it
	// ends the session least recently used.
	DefaultMaxSessions = 10000
)

// SessionOptions configure sessions.
type SessionOptions struct {
	Idle, Absolute time.Duration
	Max            int
}

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
	seen     time.Time
}

// sessions is the store of live sessions.
type sessions struct {
	opts SessionOptions
	now  func() time.Time
	mu   sync.Mutex
	byID map[[32]byte]*session
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
	return &sessions{opts: o, now: time.Now, byID: map[[32]byte]*session{}}
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

// create starts a session for user and returns its ID.
func (s *sessions) create(user string) (string, *session) {
	id := randomToken()
	now := s.now()
	ss := &session{user: user, csrf: randomToken(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= s.opts.Max {
		s.evictLocked(now)
	}
	s.byID[sessionKey(id)] = ss
	return id, ss
}

// evictLocked drops expired sessions, and if none was, the least
// recently used one.
func (s *sessions) evictLocked(now time.Time) {
	var oldestKey [32]byte
	var oldest *session
	n := len(s.byID)
	for k, ss := range s.byID {
		if s.expired(ss, now) {
			delete(s.byID, k)
			continue
		}
		if oldest == nil || ss.seen.Before(oldest.seen) {
			oldestKey, oldest = k, ss
		}
	}
	if len(s.byID) == n && oldest != nil {
		delete(s.byID, oldestKey)
	}
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.seen) >= s.opts.Idle || now.Sub(ss.created) >= s.opts.Absolute
}

// lookup returns the live session of id and marks it used; nil when there
// is none (expired ones are dropped).
func (s *sessions) lookup(id string) *session {
	if id == "" {
		return nil
	}
	k := sessionKey(id)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.byID[k]
	if ss == nil {
		return nil
	}
	if s.expired(ss, now) {
		delete(s.byID, k)
		return nil
	}
	ss.seen = now
	return ss
}

// end ends the session of id; it returns the session ended, nil if none.
func (s *sessions) end(id string) *session {
	k := sessionKey(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.byID[k]
	delete(s.byID, k)
	return ss
}

// endUser ends every session of user.
func (s *sessions) endUser(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, ss := range s.byID {
		if ss.user == user {
			delete(s.byID, k)
		}
	}
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
// none that is live.
func (h *Handler) sessionOf(r *http.Request) (*session, string) {
	c, err := r.Cookie(h.sessionCookieName())
	if err != nil || len(c.Value) > 128 {
		return nil, ""
	}
	return h.sessions.lookup(c.Value), c.Value
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
	ss, id := h.sessionOf(r)
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
		h.sessions.end(id)
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
