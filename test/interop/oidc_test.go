package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/test/harness"
)

// hydraBinary finds ORY Hydra (built by .ci/run from the tools module in
// test/tools, with SQLite for its in-memory store: see test/tools/tools.md).
func hydraBinary(t *testing.T) string {
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

// hydra is a running ORY Hydra on loopback (in-memory store, --dev for its
// http issuer), with a login and consent app that signs in subject with
// the given claims.
type hydra struct {
	public, admin string // base URLs
}

func startHydra(t *testing.T, subject string, claims map[string]any) *hydra {
	bin := hydraBinary(t)
	pub, adm := harness.FreePort(t), harness.FreePort(t)
	h := &hydra{public: fmt.Sprintf("http://127.0.0.1:%d/", pub), admin: fmt.Sprintf("http://127.0.0.1:%d", adm)}
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
		"URLS_SELF_ISSUER="+h.public,
		"URLS_LOGIN="+appURL+"/login",
		"URLS_CONSENT="+appURL+"/consent",
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT="+strconv.Itoa(pub),
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT="+strconv.Itoa(adm),
		"LOG_LEVEL=warn",
	)
	proc := harness.Start(t, cmd, false)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if proc.Exited() {
			t.Fatalf("hydra exited: %v", proc.Err())
		}
		rs, err := http.Get(h.public + ".well-known/openid-configuration")
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

func (h *hydra) adminJSON(t *testing.T, method, path string, in, out any) {
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

// client registers Ward as an OAuth2 client and returns its ID and secret.
func (h *hydra) client(t *testing.T, redirect string) (string, string) {
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

// TestOIDCSignInWithHydra: browser sign-in through a real OpenID provider
// (ORY Hydra): the authorization code flow with PKCE ends in a Ward
// session whose roles come from the ID token's claim, mapped onto Ward's;
// the session authenticates DICOMweb; a replayed callback and a user
// without a mapped role are refused; both are audited.
func TestOIDCSignInWithHydra(t *testing.T) {
	for _, c := range []struct {
		name  string
		roles []string
		ok    bool
	}{{"mapped role", []string{"radiologist", "other"}, true}, {"no mapped role", []string{"porter"}, false}} {
		t.Run(c.name, func(t *testing.T) {
			h := startHydra(t, "subject-7", map[string]any{"roles": c.roles, "preferred_username": "dr.who"})
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			if err := os.Mkdir(data, 0o700); err != nil {
				t.Fatal(err)
			}
			webPort := harness.FreePort(t)
			base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
			id, secret := h.client(t, base+"/oidc/callback")
			secretFile := filepath.Join(data, "oidc-secret")
			if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			conf := fmt.Sprintf("[web]\nlisten = \"127.0.0.1:%d\"\n[web.oidc]\nissuer = %q\nclient_id = %q\nclient_secret_file = %q\nlabel = \"Hospital SSO\"\n[web.oidc.role_map]\nradiologist = \"viewer\"\n", webPort, h.public, id, secretFile)
			if err := os.WriteFile(filepath.Join(data, "ward.toml"), []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			bin := harness.WardBinary(t)
			harness.Start(t, exec.Command(bin, "serve", "--data", data, "--dicom-listen", "127.0.0.1:"+strconv.Itoa(harness.FreePort(t)), "--min-free", "16MiB"), true)
			waitHTTP(t, base+"/healthz")
			jar, _ := cookiejar.New(nil)
			cl := &http.Client{Jar: jar, Timeout: 30 * time.Second}
			// The sign-in page offers the provider.
			rs, err := cl.Get(base + "/signin")
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(rs.Body)
			rs.Body.Close()
			if !strings.Contains(string(page), "Sign in with Hospital SSO") {
				t.Fatalf("sign-in page without the provider: %s", page)
			}
			// The whole flow: Ward → Hydra → login app → Hydra → consent
			// app → Hydra → Ward's callback (redirects followed).
			rs, err = cl.Get(base + "/oidc/login?next=/session")
			if err != nil {
				t.Fatal(err)
			}
			page, _ = io.ReadAll(rs.Body)
			rs.Body.Close()
			if !c.ok {
				if rs.StatusCode != 403 || !strings.Contains(string(page), "no Ward role") {
					t.Fatalf("user without a mapped role: %d %s", rs.StatusCode, page)
				}
				harness.ReadAudit(t, data, func(r []audit.Record) bool {
					return auditHas(r, "authentication", audit.OutcomeMinorFailure, "single sign-on refused: no Ward role")
				})
				return
			}
			if rs.StatusCode != 200 || !strings.Contains(string(page), `url=/session`) {
				t.Fatalf("callback: %d %s", rs.StatusCode, page)
			}
			rs, err = cl.Get(base + "/session")
			if err != nil {
				t.Fatal(err)
			}
			var info struct {
				User  string   `json:"user"`
				Roles []string `json:"roles"`
			}
			json.NewDecoder(rs.Body).Decode(&info)
			rs.Body.Close()
			if rs.StatusCode != 200 || info.User != "dr.who" || len(info.Roles) != 1 || info.Roles[0] != "viewer" {
				t.Fatalf("session: %d %+v", rs.StatusCode, info)
			}
			rs, err = cl.Get(base + "/dicom-web/studies?PatientID=NOBODY")
			if err != nil {
				t.Fatal(err)
			}
			rs.Body.Close()
			if rs.StatusCode == 401 || rs.StatusCode == 403 {
				t.Fatalf("DICOMweb with the single sign-on session: %d", rs.StatusCode)
			}
			// A callback replayed (the state is used up) is refused.
			rs, err = cl.Get(base + "/oidc/callback?state=forged&code=x")
			if err != nil {
				t.Fatal(err)
			}
			rs.Body.Close()
			if rs.StatusCode != 403 {
				t.Fatalf("forged callback: %d", rs.StatusCode)
			}
			harness.ReadAudit(t, data, func(r []audit.Record) bool {
				return auditHas(r, "authentication", audit.OutcomeSuccess, "single sign-on (OpenID Connect), roles viewer")
			})
		})
	}
}

func waitHTTP(t *testing.T, u string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if rs, err := http.Get(u); err == nil {
			rs.Body.Close()
			return
		}
	}
	t.Fatalf("%s did not answer", u)
}
