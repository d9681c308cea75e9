package web

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSessionLifetimes(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newSessions(SessionOptions{Idle: time.Minute, Absolute: time.Hour, Max: 3})
	s.now = func() time.Time { return now }
	create := func(user string) string {
		id, _, err := s.create(user, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	live := func(id string) bool {
		ss, err := s.lookup(id)
		if err != nil {
			t.Fatal(err)
		}
		return ss != nil
	}
	id := create("ana")
	now = now.Add(59 * time.Second)
	if !live(id) {
		t.Fatal("ended before the idle timeout")
	}
	// Used every 50 s, it lives until the absolute timeout.
	for now.Before(time.Unix(1e9, 0).Add(time.Hour - time.Minute)) {
		now = now.Add(50 * time.Second)
		if !live(id) {
			t.Fatalf("ended at %v", now.Sub(time.Unix(1e9, 0)))
		}
	}
	now = time.Unix(1e9, 0).Add(time.Hour)
	if live(id) {
		t.Fatal("outlived the absolute timeout")
	}
	id2 := create("bob")
	now = now.Add(time.Minute)
	if live(id2) {
		t.Fatal("outlived the idle timeout")
	}
	// Beyond Max, the least recently used goes.
	a := create("a")
	now = now.Add(time.Second)
	b := create("b")
	now = now.Add(time.Second)
	c := create("c")
	now = now.Add(time.Second)
	live(a)
	d := create("d")
	if live(b) || !live(a) || !live(c) || !live(d) {
		t.Fatal("eviction did not drop the least recently used")
	}
	if err := s.endUser("c"); err != nil || live(c) {
		t.Fatal("endUser")
	}
	if live("") || live("nope") {
		t.Fatal("unknown IDs")
	}
	// What the store holds is the session, whole, under the hash of its
	// ID: never the ID.
	e, ss, _ := s.create("eve", true, []string{"viewer"})
	got, _ := s.lookup(e)
	if got == nil || got.user != "eve" || !got.external || len(got.roles) != 1 || got.csrf != ss.csrf {
		t.Fatalf("session round trip: %+v", got)
	}
	for k, m := range s.store.(*MemorySessions).byID {
		if strings.Contains(string(m.body), e) || string(k[:]) == e {
			t.Fatal("the store holds the session ID")
		}
	}
}

// failingSessions is a session store that is out of reach.
type failingSessions struct{ *MemorySessions }

func (failingSessions) LookupSession(context.Context, [32]byte, time.Time, time.Duration) ([]byte, error) {
	return nil, errors.New("connection refused")
}

// TestSessionStoreDown: while the session store fails, a request with a
// session cookie is answered 503, not treated as signed out.
func TestSessionStoreDown(t *testing.T) {
	h := New(Config{Sessions: SessionOptions{Store: failingSessions{NewMemorySessions(10)}}})
	h.Handle("GET /x", func(w http.ResponseWriter, r *http.Request) {})
	r := httptest.NewRequest("GET", "/x", nil)
	r.AddCookie(&http.Cookie{Name: "ward-session", Value: "abc"})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", w.Code)
	}
}

func TestLocalNext(t *testing.T) {
	for in, want := range map[string]string{
		"":                              "/",
		"/":                             "/",
		"/viewer?StudyInstanceUIDs=1.2": "/viewer?StudyInstanceUIDs=1.2",
		"//evil.example.com":            "/",
		"/\\evil.example.com":           "/",
		"https://evil.example.com":      "/",
		"javascript:alert(1)":           "/",
		"/a\r\nSet-Cookie: x":           "/",
	} {
		if got := localNext(in); got != want {
			t.Errorf("localNext(%q) = %q, want %q", in, got, want)
		}
	}
}

type openSetup struct{}

func (openSetup) Open() bool              { return true }
func (openSetup) Valid(token string) bool { return token == "t" }
func (openSetup) CreateAdmin(*http.Request, string, string, string) error {
	return nil
}

// The set-up page is served over HTTPS or to this machine only.
func TestSetupOnlyLocalOrTLS(t *testing.T) {
	h := New(Config{Setup: openSetup{}})
	for addr, want := range map[string]int{"127.0.0.1:5000": 200, "[::1]:5000": 200, "192.0.2.7:5000": 403} {
		r := httptest.NewRequest("GET", "/setup?token=t", nil)
		r.RemoteAddr = addr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("from %s: %d, want %d", addr, w.Code, want)
		}
	}
	r := httptest.NewRequest("GET", "https://ward.example.org/setup?token=t", nil)
	r.RemoteAddr = "192.0.2.7:5000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("over TLS: %d", w.Code)
	}
}
