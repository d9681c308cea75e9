package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/testci"
)

// hydraBinary finds ORY Hydra (built by .ci/run from the tools module in
// test/tools, with SQLite for its in-memory store: see test/tools/tools.md).
func hydraBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("hydra"); err == nil {
		return p
	}
	out, _ := exec.Command("go", "env", "GOPATH").Output()
	p := filepath.Join(strings.TrimSpace(string(out)), "bin", "hydra")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	testci.SkipOrFail(t, "ORY Hydra not installed (see .ci/run)")
	return ""
}

// Hydra is a running ORY Hydra on loopback (in-memory store, --dev for its
// http issuer), with a login and consent app that signs in subject with
// the given claims.
type Hydra struct {
	// Public is the issuer URL (with its trailing slash); admin the admin API.
	Public, admin string
}

func StartHydra(t testing.TB, subject string, claims map[string]any) *Hydra {
	t.Helper()
	bin := hydraBinary(t)
	pub, adm := FreePort(t), FreePort(t)
	h := &Hydra{Public: fmt.Sprintf("http://127.0.0.1:%d/", pub), admin: fmt.Sprintf("http://127.0.0.1:%d", adm)}
	// The login and consent app: accepts every challenge for subject.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var kind, challenge string
		var body map[string]any
		switch r.URL.Path {
		case "/login":
			kind, challenge = "login", r.URL.Query().Get("login_challenge")
			body = map[string]any{"subject": subject, "remember": false}
		case "/consent":
			kind, challenge = "consent", r.URL.Query().Get("consent_challenge")
			var req struct {
				RequestedScope []string `json:"requested_scope"`
			}
			h.adminJSON(t, "GET", "/admin/oauth2/auth/requests/consent?consent_challenge="+url.QueryEscape(challenge), nil, &req)
			body = map[string]any{"grant_scope": req.RequestedScope, "session": map[string]any{"id_token": claims}}
		default:
			http.NotFound(w, r)
			return
		}
		var out struct {
			RedirectTo string `json:"redirect_to"`
		}
		h.adminJSON(t, "PUT", "/admin/oauth2/auth/requests/"+kind+"/accept?"+kind+"_challenge="+url.QueryEscape(challenge), body, &out)
		http.Redirect(w, r, out.RedirectTo, http.StatusFound)
	})}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })
	appURL := "http://" + ln.Addr().String()
	cmd := exec.Command(bin, "serve", "all", "--dev")
	cmd.Env = append(os.Environ(),
		"DSN=memory",
		"SECRETS_SYSTEM=ward-test-secret-"+strconv.FormatInt(time.Now().UnixNano(), 36),
		"URLS_SELF_ISSUER="+h.Public,
		"URLS_LOGIN="+appURL+"/login",
		"URLS_CONSENT="+appURL+"/consent",
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT="+strconv.Itoa(pub),
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT="+strconv.Itoa(adm),
		"LOG_LEVEL=warn",
	)
	proc := Start(t, cmd, false)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if proc.Exited() {
			t.Fatalf("hydra exited: %v", proc.Err())
		}
		rs, err := http.Get(h.Public + ".well-known/openid-configuration")
		if err == nil {
			rs.Body.Close()
			if rs.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydra did not start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return h
}

func (h *Hydra) adminJSON(t testing.TB, method, path string, in, out any) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	rq, _ := http.NewRequest(method, h.admin+path, body)
	rq.Header.Set("Content-Type", "application/json")
	rs, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Errorf("hydra admin %s %s: %v", method, path, err)
		return
	}
	defer rs.Body.Close()
	b, _ := io.ReadAll(rs.Body)
	if rs.StatusCode/100 != 2 {
		t.Errorf("hydra admin %s %s: %d %s", method, path, rs.StatusCode, b)
		return
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Errorf("hydra admin %s: %v", path, err)
		}
	}
}

// Client registers Ward as an OAuth2 client and returns its ID and secret.
func (h *Hydra) Client(t testing.TB, redirect string) (string, string) {
	secret := "ward-client-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var out struct {
		ClientID string `json:"client_id"`
	}
	h.adminJSON(t, "POST", "/admin/clients", map[string]any{
		"client_secret": secret, "redirect_uris": []string{redirect},
		"grant_types": []string{"authorization_code"}, "response_types": []string{"code"},
		"scope": "openid profile email", "token_endpoint_auth_method": "client_secret_basic",
	}, &out)
	if out.ClientID == "" {
		t.Fatal("hydra gave no client ID")
	}
	return out.ClientID, secret
}
