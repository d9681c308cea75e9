package web

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
)

// fakeAuth accepts the bearer "good", refuses "locked" with a lockout and
// anything else as bad credentials.
type fakeAuth struct{}

func (fakeAuth) Authenticate(r *http.Request) (*archive.Principal, error) {
	switch r.Header.Get("Authorization") {
	case "":
		return nil, ErrNoCredentials
	case "Bearer good":
		return &archive.Principal{Kind: archive.User, Name: "alice", Grant: archive.Permissions{archive.PermFind: true}}, nil
	case "Bearer locked":
		return nil, &LockedOut{Until: time.Now().Add(30 * time.Second)}
	}
	return nil, fmt.Errorf("%w: unknown token", ErrBadCredentials)
}

func testHandler(cfg Config) *Handler {
	cfg.Authenticator = fakeAuth{}
	h := New(cfg)
	h.Handle("GET /dicom-web/studies", func(w http.ResponseWriter, r *http.Request) {
		p := Principal(r.Context())
		o := archive.OriginFrom(r.Context())
		fmt.Fprintf(w, "%s %s", p.Name, o.Addr)
	})
	h.Handle("POST /dicom-web/studies", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			h.Error(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	h.Handle("GET /fail/{kind}", func(w http.ResponseWriter, r *http.Request) {
		for _, k := range archive.Kinds {
			if strings.ReplaceAll(k.Error(), " ", "-") == r.PathValue("kind") {
				h.Error(w, r, archive.Fail(k, "because"))
				return
			}
		}
		h.Error(w, r, errors.New("secret cause"))
	})
	return h
}

func do(h http.Handler, method, path string, hdr map[string]string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, body)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestAuthentication(t *testing.T) {
	h := testHandler(Config{MaxBody: 1 << 20})
	for _, c := range []struct {
		name, auth string
		code       int
		challenge  string
	}{
		{"no credentials", "", 401, `Bearer realm="ward"`},
		{"bad token", "Bearer nope", 401, `Bearer realm="ward", error="invalid_token"`},
		{"locked out", "Bearer locked", 429, ""},
		{"good", "Bearer good", 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := do(h, "GET", "/dicom-web/studies", map[string]string{"Authorization": c.auth}, nil)
			if w.Code != c.code {
				t.Fatalf("status %d, want %d: %s", w.Code, c.code, w.Body)
			}
			if got := w.Header().Get("WWW-Authenticate"); got != c.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, c.challenge)
			}
			if c.code == 429 && w.Header().Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			if c.code == 200 && !strings.HasPrefix(w.Body.String(), "alice ") {
				t.Errorf("principal and origin not in the context: %q", w.Body)
			}
		})
	}
	// The health probe is the only anonymous route.
	if w := do(h, "GET", "/healthz", nil, nil); w.Code != 200 {
		t.Fatalf("healthz %d", w.Code)
	}
}

func TestSecurityHeaders(t *testing.T) {
	for _, tls := range []bool{false, true} {
		h := testHandler(Config{TLS: tls})
		w := do(h, "GET", "/dicom-web/studies", nil, nil)
		hd := w.Header()
		if hd.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(hd.Get("Content-Security-Policy"), "frame-ancestors 'none'") || hd.Get("Cache-Control") != "no-store" {
			t.Errorf("tls=%v: headers %v", tls, hd)
		}
		if got := hd.Get("Strict-Transport-Security") != ""; got != tls {
			t.Errorf("tls=%v: HSTS sent %v", tls, got)
		}
	}
}

func TestCORS(t *testing.T) {
	h := testHandler(Config{AllowOrigins: []string{"https://viewer.example.org"}})
	pre := map[string]string{"Origin": "https://viewer.example.org", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
	w := do(h, "OPTIONS", "/dicom-web/studies", pre, nil)
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://viewer.example.org" || !strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("allowed preflight: %d %v", w.Code, w.Header())
	}
	pre["Origin"] = "https://evil.example.com"
	if w := do(h, "OPTIONS", "/dicom-web/studies", pre, nil); w.Code != 403 || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign preflight: %d %v", w.Code, w.Header())
	}
	// A simple request from a foreign origin is served (it carries the
	// token) but without CORS headers: the browser keeps it from the page.
	w = do(h, "GET", "/dicom-web/studies", map[string]string{"Origin": "https://evil.example.com", "Authorization": "Bearer good"}, nil)
	if w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin got CORS headers: %v", w.Header())
	}
	// No allow-list: never any CORS header.
	h = testHandler(Config{})
	pre["Origin"] = "https://viewer.example.org"
	if w := do(h, "OPTIONS", "/dicom-web/studies", pre, nil); w.Code != 403 || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS off: %d %v", w.Code, w.Header())
	}
}

func TestBodyLimit(t *testing.T) {
	h := testHandler(Config{MaxBody: 1000})
	auth := map[string]string{"Authorization": "Bearer good"}
	if w := do(h, "POST", "/dicom-web/studies", auth, strings.NewReader(strings.Repeat("x", 1000))); w.Code != 200 {
		t.Fatalf("at the limit: %d %s", w.Code, w.Body)
	}
	// Announced too large: refused before reading.
	if w := do(h, "POST", "/dicom-web/studies", auth, strings.NewReader(strings.Repeat("x", 1001))); w.Code != 413 || !strings.Contains(w.Body.String(), "max_body") {
		t.Fatalf("over the limit: %d %s", w.Code, w.Body)
	}
	// Chunked (no length): cut while reading.
	r := httptest.NewRequest("POST", "/dicom-web/studies", io.MultiReader(strings.NewReader(strings.Repeat("x", 600)), strings.NewReader(strings.Repeat("x", 600))))
	r.ContentLength = -1
	r.Header.Set("Authorization", "Bearer good")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 413 {
		t.Fatalf("chunked over the limit: %d %s", w.Code, w.Body)
	}
}

// Every domain error has a status; the cause of an unknown error never
// reaches the client.
func TestErrorTable(t *testing.T) {
	for _, k := range archive.Kinds {
		if _, ok := statusOf[k]; !ok {
			t.Errorf("no HTTP status for %v", k)
		}
	}
	h := testHandler(Config{})
	auth := map[string]string{"Authorization": "Bearer good"}
	w := do(h, "GET", "/fail/not-authorized", auth, nil)
	if w.Code != 403 || !strings.Contains(w.Body.String(), "because") || !strings.Contains(w.Header().Get("Warning"), "because") {
		t.Fatalf("not authorized: %d %s", w.Code, w.Body)
	}
	w = do(h, "GET", "/fail/other", auth, nil)
	if w.Code != 500 || strings.Contains(w.Body.String(), "secret") {
		t.Fatalf("unknown error: %d %s", w.Code, w.Body)
	}
	// The shared index or object store out of reach (PostgreSQL, S3): 503
	// and when to try again. Other failures say nothing of when.
	w = do(h, "GET", "/fail/store-unavailable", auth, nil)
	if w.Code != 503 || w.Header().Get("Retry-After") != "5" {
		t.Errorf("store unavailable: %d, Retry-After %q, want 503 and 5", w.Code, w.Header().Get("Retry-After"))
	}
	w = do(h, "GET", "/fail/storage-failure", auth, nil)
	if w.Code != 503 || w.Header().Get("Retry-After") != "" {
		t.Errorf("storage failure: %d, Retry-After %q, want 503 and none", w.Code, w.Header().Get("Retry-After"))
	}
}

// A path with doubled slashes (a base URL ending in / joined to a path
// starting with one) is served, not redirected: a redirected POST loses
// its body.
func TestDoubleSlash(t *testing.T) {
	h := testHandler(Config{MaxBody: 100})
	w := do(h, "POST", "/dicom-web//studies", map[string]string{"Authorization": "Bearer good"}, strings.NewReader("x"))
	if w.Code != 200 {
		t.Fatalf("//studies: %d", w.Code)
	}
}
