package web

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
)

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{
		"": false, "gzip": true, "deflate, gzip;q=0.5": true, "gzip;q=0": false, "GZIP": true,
		"*": true, "*;q=0": false, "identity": false, "br, x-gzip": true, "gzip;q=0, *": false,
	} {
		if got := acceptsGzip([]string{h}); got != want {
			t.Errorf("Accept-Encoding %q: %v, want %v", h, got, want)
		}
	}
}

// TestGzip: JSON answers are compressed when the request accepts gzip,
// with Vary; multipart, images and errors (text) never are.
func TestGzip(t *testing.T) {
	body := strings.Repeat(`{"00100010":{"vr":"PN"}},`, 200)
	h := New(Config{Authenticator: allowAll{}})
	h.Handle("GET /json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/dicom+json")
		w.Header().Set("Content-Length", "5000")
		_, _ = io.WriteString(w, body[:5000])
	})
	h.Handle("GET /multipart", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", `multipart/related; type="application/dicom"; boundary=x`)
		_, _ = io.WriteString(w, body)
	})
	h.Handle("GET /png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = io.WriteString(w, body)
	})
	do := func(path, ae, method string) *httptest.ResponseRecorder {
		rq := httptest.NewRequest(method, path, nil)
		rq.Header.Set("Authorization", "Bearer x")
		if ae != "" {
			rq.Header.Set("Accept-Encoding", ae)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, rq)
		return w
	}
	w := do("/json", "gzip", http.MethodGet)
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Length") != "" || w.Header().Get("Vary") != "Accept-Encoding" {
		t.Fatalf("json: %v", w.Header())
	}
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || string(got) != body[:5000] {
		t.Fatalf("gunzip: %v (%d bytes)", err, len(got))
	}
	if w := do("/json", "", http.MethodGet); w.Header().Get("Content-Encoding") != "" || w.Body.String() != body[:5000] || w.Header().Get("Vary") != "Accept-Encoding" {
		t.Errorf("json without gzip: %v", w.Header())
	}
	if w := do("/json", "gzip;q=0", http.MethodGet); w.Header().Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 compressed")
	}
	for _, p := range []string{"/multipart", "/png", "/nothing"} {
		if w := do(p, "gzip", http.MethodGet); w.Header().Get("Content-Encoding") != "" {
			t.Errorf("%s compressed", p)
		}
	}
	h.Handle("GET /copy", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.URL.Query().Get("type"))
		_, _ = io.Copy(w, strings.NewReader(body))
	})
	for typ, gz := range map[string]bool{"application/json": true, "application/octet-stream": false} {
		w := do("/copy?type="+typ, "gzip", http.MethodGet)
		if (w.Header().Get("Content-Encoding") == "gzip") != gz {
			t.Errorf("io.Copy %s: %v", typ, w.Header())
			continue
		}
		var rd io.Reader = w.Body
		if gz {
			zr, err := gzip.NewReader(w.Body)
			if err != nil {
				t.Fatal(err)
			}
			rd = zr
		}
		if got, err := io.ReadAll(rd); err != nil || string(got) != body {
			t.Errorf("io.Copy %s: %v, %d bytes", typ, err, len(got))
		}
	}
	if w := do("/json", "gzip", http.MethodGet); w.Code != 200 {
		t.Errorf("pooled writer reused: %d", w.Code)
	}
}

type allowAll struct{}

func (allowAll) Authenticate(*http.Request) (*archive.Principal, error) {
	return &archive.Principal{Kind: archive.User, Name: "t"}, nil
}
