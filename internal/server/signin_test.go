package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy/identity"
)

// TestBrowserSignIn: a user signs in with its passcode and gets a session
// that authenticates DICOMweb requests; a state-changing request needs the
// CSRF token; sign-out ends the session; a wrong passcode is refused;
// sign-in, failure and sign-out are audited.
func TestBrowserSignIn(t *testing.T) {
	hash, err := identity.HashPasscode("a long passcode")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testServer(t, func(c *config.Config) {
		c.Users = []config.User{{Name: "ana", Hash: hash, Roles: []string{"viewer"}}, {Name: "dimse", Hash: hash}}
		c.DICOM.LockoutAfter = 5
	}, nil)
	base := "http://" + s.WebAddr().String()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, hdr map[string]string, body string) (*http.Response, string) {
		t.Helper()
		rq, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range hdr {
			rq.Header.Set(k, v)
		}
		rs, err := c.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rs.Body)
		rs.Body.Close()
		return rs, string(b)
	}
	// A browser without a session is sent to sign-in; an API call gets 401.
	if rs, _ := do("GET", "/session", map[string]string{"Accept": "text/html"}, ""); rs.StatusCode != 303 || rs.Header.Get("Location") != "/signin?next=%2Fsession" {
		t.Fatalf("page without a session: %d %v", rs.StatusCode, rs.Header)
	}
	if rs, _ := do("GET", "/dicom-web/studies?PatientID=X", nil, ""); rs.StatusCode != 401 {
		t.Fatalf("API without a session: %d", rs.StatusCode)
	}
	csrfField := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	signin := func(user, pass, next string) (*http.Response, string) {
		t.Helper()
		rs, page := do("GET", "/signin?next="+url.QueryEscape(next), nil, "")
		if rs.StatusCode != 200 || !strings.Contains(rs.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("sign-in page: %d %v", rs.StatusCode, rs.Header)
		}
		m := csrfField.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no csrf field in %s", page)
		}
		form := url.Values{"user": {user}, "passcode": {pass}, "csrf": {m[1]}, "next": {next}}
		return do("POST", "/signin", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, form.Encode())
	}
	if rs, page := signin("ana", "wrong passcode", "/"); rs.StatusCode != 401 || !strings.Contains(page, "wrong passcode") {
		t.Fatalf("wrong passcode: %d", rs.StatusCode)
	}
	// A DIMSE-only user (no role) cannot sign in, and is told what anyone is.
	if rs, _ := signin("dimse", "a long passcode", "/"); rs.StatusCode != 401 {
		t.Fatalf("user without a role: %d", rs.StatusCode)
	}
	// A forged form (no matching cookie) is refused.
	form := url.Values{"user": {"ana"}, "passcode": {"a long passcode"}, "csrf": {"forged"}}
	if rs, _ := do("POST", "/signin", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, form.Encode()); rs.StatusCode != 403 {
		t.Fatalf("login CSRF: %d", rs.StatusCode)
	}
	// An open redirect is not followed.
	rs, _ := signin("ana", "a long passcode", "//evil.example.com/x")
	if rs.StatusCode != 303 || rs.Header.Get("Location") != "/" {
		t.Fatalf("sign-in: %d %v", rs.StatusCode, rs.Header)
	}
	var cookie *http.Cookie
	for _, ck := range rs.Cookies() {
		if ck.Name == "ward-session" {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie: %+v", rs.Cookies())
	}
	rs, body := do("GET", "/session", nil, "")
	var info struct {
		User, CSRF string
		Roles      []string
	}
	if err := json.Unmarshal([]byte(body), &info); rs.StatusCode != 200 || err != nil || info.User != "ana" || info.CSRF == "" {
		t.Fatalf("session: %d %s", rs.StatusCode, body)
	}
	if rs, _ := do("GET", "/dicom-web/studies?PatientID=X", nil, ""); rs.StatusCode == 401 || rs.StatusCode == 403 {
		t.Fatalf("DICOMweb with a session: %d", rs.StatusCode)
	}
	if rs, _ := do("POST", "/dicom-web/studies", map[string]string{"Content-Type": "multipart/related; type=\"application/dicom\"; boundary=x"}, "--x--"); rs.StatusCode != 403 {
		t.Fatalf("state change without the CSRF token: %d", rs.StatusCode)
	}
	if rs, _ := do("POST", "/signout", nil, ""); rs.StatusCode != 403 {
		t.Fatalf("sign-out without the CSRF token: %d", rs.StatusCode)
	}
	if rs, _ := do("POST", "/signout", map[string]string{"X-CSRF-Token": info.CSRF}, ""); rs.StatusCode != 204 {
		t.Fatalf("sign-out: %d", rs.StatusCode)
	}
	// The old cookie no longer works, even replayed.
	rq, _ := http.NewRequest("GET", base+"/session", nil)
	rq.AddCookie(cookie)
	if rs, err := http.DefaultClient.Do(rq); err != nil || rs.StatusCode != 401 {
		t.Fatalf("after sign-out: %v %v", rs.StatusCode, err)
	}
	waitAudit(t, s, func(xmls []string) bool {
		all := strings.Join(xmls, "\n")
		return strings.Contains(all, "browser sign-in refused") && strings.Contains(all, ">browser sign-in<") && strings.Contains(all, "signed out")
	})
}
