package interop

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/test/harness"
)

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
			h := harness.StartHydra(t, "subject-7", map[string]any{"roles": c.roles, "preferred_username": "dr.who"})
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			if err := os.Mkdir(data, 0o700); err != nil {
				t.Fatal(err)
			}
			webPort := harness.FreePort(t)
			base := fmt.Sprintf("http://127.0.0.1:%d", webPort)
			id, secret := h.Client(t, base+"/oidc/callback")
			secretFile := filepath.Join(data, "oidc-secret")
			if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			conf := fmt.Sprintf("[web]\nlisten = \"127.0.0.1:%d\"\n[web.oidc]\nissuer = %q\nclient_id = %q\nclient_secret_file = %q\nlabel = \"Hospital SSO\"\n[web.oidc.role_map]\nradiologist = \"viewer\"\n", webPort, h.Public, id, secretFile)
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
