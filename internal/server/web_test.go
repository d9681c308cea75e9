package server

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy/identity"
	"github.com/ward-pacs/ward/policy/tokens"
)

// TestWebAuthentication: the web front end admits a valid token only;
// wrong tokens are counted in the lockout shared with DIMSE (429 once
// locked, for good tokens from that source too) and audited as failed
// user authentications.
func TestWebAuthentication(t *testing.T) {
	hash, err := identity.HashPasscode("a long passcode")
	if err != nil {
		t.Fatal(err)
	}
	users := []config.User{{Name: "ana", Hash: hash, Roles: []string{"viewer"}}}
	var tok string
	s, _ := testServer(t, func(c *config.Config) {
		c.Users = users
		c.DICOM.LockoutAfter = 3
	}, func(s *Server) {
		if err := config.EditTokens(config.TokenFile(s.Config.DataDir), func(set *tokens.Set) error {
			tok, _, err = set.Issue("ana", tokens.Read, time.Hour, time.Now())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.setPolicy(s.Config); err != nil {
			t.Fatal(err)
		}
	})
	base := "http://" + s.WebAddr().String()
	get := func(bearer string) *http.Response {
		t.Helper()
		rq, _ := http.NewRequest("GET", base+"/dicom-web/studies?PatientID=X", nil)
		if bearer != "" {
			rq.Header.Set("Authorization", "Bearer "+bearer)
		}
		rs, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		rs.Body.Close()
		return rs
	}
	if rs := get(tok); rs.StatusCode == 401 || rs.StatusCode == 403 || rs.StatusCode == 429 {
		t.Fatalf("valid token: %d", rs.StatusCode)
	}
	// No credentials: a challenge, not a failure.
	for range 5 {
		if rs := get(""); rs.StatusCode != 401 || rs.Header.Get("WWW-Authenticate") != `Bearer realm="ward"` {
			t.Fatalf("no token: %d %v", rs.StatusCode, rs.Header)
		}
	}
	bad := tok[:len(tok)-4] + "AAAA"
	for i := range 3 {
		if rs := get(bad); rs.StatusCode != 401 || !strings.Contains(rs.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Fatalf("wrong token %d: %d", i, rs.StatusCode)
		}
	}
	rs := get(tok)
	if rs.StatusCode != 429 || rs.Header.Get("Retry-After") == "" {
		t.Fatalf("after 3 failures: %d %v", rs.StatusCode, rs.Header)
	}
	want := 3
	var recs []audit.Record
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		recs = recs[:0]
		if b, err := os.ReadFile(filepath.Join(s.Config.AuditDir(), audit.FileName)); err == nil {
			_ = audit.Each(bytes.NewReader(b), func(r *audit.Record) error { recs = append(recs, *r); return nil })
		}
		n := 0
		for _, r := range recs {
			if r.Event == "authentication" && r.Outcome != 0 && strings.Contains(r.XML, "bearer token refused") {
				n++
			}
		}
		if n == want {
			return
		}
	}
	for _, r := range recs {
		t.Logf("%s %d", r.Event, r.Outcome)
	}
	t.Fatalf("want %d failed web authentications in the audit trail", want)
}

// One source cannot hold every place of the web listener: connections
// beyond the per-source bound are closed at once, and places come back
// when connections close.
func TestWebListenerLimits(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitListener(raw, 10, 3)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	var held []net.Conn
	for range 3 {
		select {
		case c := <-accepted:
			held = append(held, c)
		case <-time.After(5 * time.Second):
			t.Fatal("fewer than 3 accepted")
		}
	}
	select {
	case <-accepted:
		t.Fatal("a 4th connection from one source was accepted")
	case <-time.After(200 * time.Millisecond):
	}
	// The connections over the bound were closed by the server.
	closed := 0
	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed != 2 {
		t.Fatalf("%d connections closed by the server, want 2", closed)
	}
	held[0].Close()
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the place freed was not given again")
	}
}
