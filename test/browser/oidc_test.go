package browser

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ward-pacs/ward/test/harness"
)

// TestViewerOIDC: single sign-on in Chromium, end to end against a real
// OpenID provider (ORY Hydra, with the test's login and consent app): the
// sign-in page's provider link goes to Hydra and back through Ward's
// callback (the authorization code flow with PKCE) to the viewer, whose
// study list then loads under the session, as a user Ward has no account
// for, with the role the ID token's claim maps to.
func TestViewerOIDC(t *testing.T) {
	h := harness.StartHydra(t, "subject-42", map[string]any{"roles": []string{"radiologist"}, "preferred_username": "dr.who"})
	secretFile := filepath.Join(t.TempDir(), "oidc-secret")
	w := startWard(t, false, func(base string) string {
		id, secret := h.Client(t, base+"/oidc/callback")
		if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("[web.oidc]\nissuer = %q\nclient_id = %q\nclient_secret_file = %q\nlabel = \"Hospital SSO\"\n[web.oidc.role_map]\nradiologist = \"viewer\"\n", h.Public, id, secretFile)
	})
	b := newBrowser(t, w)
	b.do(t, 30*time.Second, chromedp.Navigate(w.base+"/"), chromedp.WaitVisible(chromedp.CSS(`a[href^="/oidc/login"]`)))
	b.do(t, 60*time.Second, chromedp.Click(chromedp.CSS(`a[href^="/oidc/login"]`)))
	poll(t, b, 60*time.Second, "the study list after single sign-on", `document.body.innerText`, func(s string) bool {
		return strings.Contains(s, studies[0].listed)
	})
	if loc := b.location(t); loc != w.base+"/" {
		t.Errorf("after single sign-on the browser is at %s, want %s/", loc, w.base)
	}
	who := eval[string](t, b, `fetch('/session', {credentials: 'same-origin'}).then(r => r.text())`)
	if !strings.Contains(who, `"user":"dr.who"`) || !strings.Contains(who, `"viewer"`) {
		t.Errorf("session after single sign-on: %s", who)
	}
	if errs := b.takeErrors(t); len(errs) > 0 {
		t.Errorf("single sign-on reported errors:\n  %s", strings.Join(errs, "\n  "))
	}
}
