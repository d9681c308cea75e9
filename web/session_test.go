package web

import (
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
