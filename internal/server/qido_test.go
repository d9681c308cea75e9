package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy/identity"
	"github.com/ward-pacs/ward/policy/tokens"
	"github.com/ward-pacs/ward/web"
	"github.com/ward-pacs/ward/web/dicomweb"
)

type fixedPrincipal struct{ p *archive.Principal }

func (f fixedPrincipal) Authenticate(*http.Request) (*archive.Principal, error) { return f.p, nil }

// TestQIDOListingFollowsRole: through the server's own web handler and
// service (policy, bulk-query rule, audit), a viewer's token lists
// studies with a universal query and a limit; a principal holding find
// but not bulk-query gets 403 for it and must name a key that narrows
// the search, as over C-FIND.
func TestQIDOListingFollowsRole(t *testing.T) {
	hash, err := identity.HashPasscode("a long passcode")
	if err != nil {
		t.Fatal(err)
	}
	users := []config.User{{Name: "vic", Hash: hash, Roles: []string{"viewer"}}}
	// No viewer: serveWeb would set it up while this test builds a
	// handler of its own (a data race on Server.viewer).
	s, _ := testServer(t, func(c *config.Config) { c.Users = users; c.Web.Viewer = "off" }, nil)
	s.Load = func() (*config.Config, error) {
		c := *s.Config
		c.Users = users
		return &c, nil
	}
	var tok string
	if err := config.EditTokens(config.TokenFile(s.Config.DataDir), func(set *tokens.Set) error {
		tok, _, err = set.Issue("vic", tokens.Read, time.Hour, time.Now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.reloadFromAdmin("test"); err != nil {
		t.Fatal(err)
	}
	uploader := &webLike{svc: s.service(), addr: "127.0.0.1:50125", user: &archive.Principal{Kind: archive.User, Name: "up",
		Grant: archive.Permissions{archive.PermStore: true}}}
	ct := newSyntheticCT(t, 64)
	a, _ := ct.instance(1)
	if err := uploader.stow(a); err != nil {
		t.Fatal(err)
	}
	get := func(h http.Handler, target, bearer string) *httptest.ResponseRecorder {
		rq := httptest.NewRequest(http.MethodGet, target, nil)
		rq.RemoteAddr = "127.0.0.1:50200"
		if bearer != "" {
			rq.Header.Set("Authorization", "Bearer "+bearer)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, rq)
		return w
	}
	served, err := s.webHandler()
	if err != nil {
		t.Fatal(err)
	}
	w := get(served, "/dicom-web/studies?limit=10", tok)
	var ms []map[string]json.RawMessage
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &ms) != nil || len(ms) != 1 {
		t.Fatalf("viewer's study list: %d %s", w.Code, w.Body)
	}
	if w := get(served, "/dicom-web/studies", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("without a token: %d", w.Code)
	}
	// A search refused for its parameters, before the service, is
	// audited too: a failed Query naming the user and why.
	if w := get(served, "/dicom-web/studies?color=blue", tok); w.Code != http.StatusBadRequest {
		t.Errorf("unknown parameter: %d", w.Code)
	}
	if err := s.audit.Sync(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(s.audit.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := false
	if err := audit.Each(f, func(r *audit.Record) error {
		found = found || r.Event == "query" && r.Outcome == audit.OutcomeMinorFailure && slices.Contains(r.Peers, "vic") && strings.Contains(r.XML, "color")
		return nil
	}); err != nil || !found {
		t.Errorf("no failed Query record for the refused search (%v)", err)
	}

	// A principal with find but not bulk-query, on the same service.
	h := web.New(web.Config{Authenticator: fixedPrincipal{&archive.Principal{Kind: archive.User, Name: "nobulk",
		Grant: archive.Permissions{archive.PermFind: true}}}})
	dicomweb.Register(h, s.service(), dicomweb.Options{MaxResults: 1000})
	for _, target := range []string{"/dicom-web/studies", "/dicom-web/studies?limit=10", "/dicom-web/studies?PatientName=*"} {
		w := get(h, target, "x")
		if w.Code != http.StatusForbidden || !strings.Contains(w.Header().Get("Warning"), "bulk-query") {
			t.Errorf("%s without bulk-query: %d %q", target, w.Code, w.Body)
		}
		if testing.Verbose() {
			t.Log(w.Body.String())
		}
	}
	if w := get(h, "/dicom-web/studies?PatientID=BENCH-1", "x"); w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &ms) != nil || len(ms) != 1 {
		t.Errorf("a narrowed search without bulk-query: %d %s", w.Code, w.Body)
	}
}
