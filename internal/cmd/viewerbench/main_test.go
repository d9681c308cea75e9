package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestProxy: the "orthanc" origin sends /dicom-web/ to the other server,
// without Ward's session cookie, and everything else to Ward; the "ward"
// origin sends everything to Ward.
func TestProxy(t *testing.T) {
	backend := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name+" "+r.URL.RequestURI()+" cookie="+r.Header.Get("Cookie"))
		}))
	}
	ward, other := backend("ward"), backend("other")
	defer ward.Close()
	defer other.Close()
	wu, _ := url.Parse(ward.URL)
	ou, _ := url.Parse(other.URL)
	get := func(base, path string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Cookie", "ward-session=s")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	o, w := proxy(wu, ou), proxy(wu, nil)
	for _, c := range []struct{ base, path, want string }{
		{o, "/dicom-web/studies?limit=1", "other /dicom-web/studies?limit=1 cookie="},
		{o, "/viewer?StudyInstanceUIDs=1", "ward /viewer?StudyInstanceUIDs=1 cookie=ward-session=s"},
		{o, "/dicom-webx", "ward /dicom-webx cookie=ward-session=s"},
		{w, "/dicom-web/studies", "ward /dicom-web/studies cookie=ward-session=s"},
	} {
		if got := get(c.base, c.path); got != c.want {
			t.Errorf("GET %s%s: %q, want %q", c.base, c.path, got, c.want)
		}
	}
}

func TestStat(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want string
	}{
		{[]float64{3, 1, 2}, "2 (1-3)"},
		{[]float64{4, 1, 2, 3}, "3 (1-4)"}, // median 2.5 rounds to 3
		{[]float64{7}, "7 (7-7)"},
	} {
		if got := stat(c.v); got != c.want {
			t.Errorf("stat(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}
