package web

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSessionLifetimes(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newSessions(SessionOptions{Idle: time.Minute, Absolute: time.Hour, Max: 3})
	s.now = func() time.Time { return now }
	id, _ := s.create("ana")
	now = now.Add(59 * time.Second)
	if s.lookup(id) == nil {
		t.Fatal("ended before the idle timeout")
	}
	// Used every 50 s, it lives until the absolute timeout.
	for now.Before(time.Unix(1e9, 0).Add(time.Hour - time.Minute)) {
		now = now.Add(50 * time.Second)
		if s.lookup(id) == nil {
			t.Fatalf("ended at %v", now.Sub(time.Unix(1e9, 0)))
		}
	}
	now = time.Unix(1e9, 0).Add(time.Hour)
	if s.lookup(id) != nil {
		t.Fatal("outlived the absolute timeout")
	}
	id2, _ := s.create("bob")
	now = now.Add(time.Minute)
	if s.lookup(id2) != nil {
		t.Fatal("outlived the idle timeout")
	}
	// Beyond Max, the least recently used goes.
	a, _ := s.create("a")
	now = now.Add(time.Second)
	b, _ := s.create("b")
	now = now.Add(time.Second)
	c, _ := s.create("c")
	now = now.Add(time.Second)
	s.lookup(a)
	d, _ := s.create("d")
	if s.lookup(b) != nil || s.lookup(a) == nil || s.lookup(c) == nil || s.lookup(d) == nil {
		t.Fatal("eviction did not drop the least recently used")
	}
	s.endUser("c")
	if s.lookup(c) != nil {
		t.Fatal("endUser")
	}
	if s.lookup("") != nil || s.lookup("nope") != nil {
		t.Fatal("unknown IDs")
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
