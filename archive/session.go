package archive

import (
	"context"
	"errors"
	"sync"
)

// A session is one connection's run of requests, as its front end sees
// it: a DIMSE association, an HTTP request carrying several objects. The
// front end opens it (WithSession) and ends it (End); wrappers around the
// Service keep per-session state in it, released when it ends. The audit
// trail reports a session's stored instances in one record (PS3.15 A.5.3.13
// allows one message per association). Without a session, or after its
// end, each request stands alone.
type Session struct {
	mu    sync.Mutex
	vals  map[any]any
	ends  []func()
	ended bool
}

type sessionKey struct{}

// WithSession returns ctx carrying a new session, and the session.
func WithSession(ctx context.Context) (context.Context, *Session) {
	s := &Session{}
	return context.WithValue(ctx, sessionKey{}, s), s
}

// SessionFrom returns the session ctx carries, nil without one.
func SessionFrom(ctx context.Context) *Session {
	s, _ := ctx.Value(sessionKey{}).(*Session)
	return s
}

// Value returns the session's value under key. On first use it calls
// create for the value and a function to run when the session ends (nil:
// none). It returns nil on a nil or ended session: the caller then acts
// on the request alone.
func (s *Session) Value(key any, create func() (v any, end func())) any {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil
	}
	if v, ok := s.vals[key]; ok {
		return v
	}
	v, end := create()
	if s.vals == nil {
		s.vals = map[any]any{}
	}
	s.vals[key] = v
	if end != nil {
		s.ends = append(s.ends, end)
	}
	return v
}

// End ends the session: the end functions of its values run, in the
// order the values were made. Later calls do nothing.
func (s *Session) End() {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	ends := s.ends
	s.ends, s.vals = nil, nil
	s.mu.Unlock()
	for _, f := range ends {
		f()
	}
}

type originKey struct{}

// WithOrigin returns ctx carrying the network origin of its requests
// (the front end's connection), for wrappers such as the audit trail.
func WithOrigin(ctx context.Context, o Origin) context.Context {
	return context.WithValue(ctx, originKey{}, o)
}

// OriginFrom returns the origin ctx carries (zero without one).
func OriginFrom(ctx context.Context) Origin {
	o, _ := ctx.Value(originKey{}).(Origin)
	return o
}

// ErrNotAttempted is the outcome a front end reports to an instance's
// Delivered when the retrieve ended before it tried to deliver that
// instance (cancelled, or the connection gone).
var ErrNotAttempted = errors.New("not attempted: the retrieve ended first")
