package web

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ward-pacs/ward/archive"
)

// Accounts is what browser sign-in needs of the users: internal/server
// implements it over the users' passcode hashes and roles, with the
// lockout and the audit trail.
type Accounts interface {
	// SignIn verifies user's passcode for r's source and returns the
	// user's principal; an error wrapping ErrBadCredentials (the same for
	// an unknown user, a wrong passcode or a user without a role), or a
	// *LockedOut. It counts and audits the attempt.
	SignIn(r *http.Request, user, passcode string) (*archive.Principal, error)
	// Principal is user's principal as the roles are now; nil when the
	// user is gone or has no role (its sessions end).
	Principal(user string) *archive.Principal
	// SignedOut audits the end of user's session (why: "signed out").
	SignedOut(r *http.Request, user, why string)
	// External is the principal of a user the OpenID provider vouched
	// for, with roles (Ward's names) from its ID token; nil when none
	// grants anything. With r (at sign-in) it audits the success.
	External(r *http.Request, user string, roles []string) *archive.Principal
	// ExternalFailed audits a refused OpenID sign-in.
	ExternalFailed(r *http.Request, user, why string)
}

// Bounds of the sign-in form.
const (
	maxUserLen     = 128
	maxPasscodeLen = 1024
	signinCookie   = "ward-signin"
)

const signinStyle = `body{font-family:sans-serif;background:#111;color:#eee;display:flex;justify-content:center;margin-top:12vh}form{display:flex;flex-direction:column;gap:.6em;width:18em}input,button{font-size:1em;padding:.4em}p.err{color:#f88}`

var signinCSP = "default-src 'none'; style-src 'sha256-" + hashB64(signinStyle) + "'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func hashB64(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

var signinPage = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Ward: sign in</title><style>` + signinStyle + `</style></head>
<body><form method="post" action="/signin">
<h1>Ward</h1>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
<label>User <input name="user" autocomplete="username" required maxlength="128" value="{{.User}}" autofocus></label>
<label>Passcode <input name="passcode" type="password" autocomplete="current-password" required maxlength="1024"></label>
<input type="hidden" name="csrf" value="{{.CSRF}}"><input type="hidden" name="next" value="{{.Next}}">
<button type="submit">Sign in</button>
{{if .OIDC}}<p><a href="/oidc/login?next={{.Next}}">Sign in with {{.OIDC}}</a></p>{{end}}
</form></body></html>
`))

// registerSignIn adds the sign-in routes (anonymous: they are how one
// gets credentials) and /session.
func (h *Handler) registerSignIn() {
	h.mux.HandleFunc("GET /signin", h.signinForm)
	h.mux.HandleFunc("POST /signin", h.signin)
	h.mux.HandleFunc("POST /signout", h.signout)
	h.Handle("GET /signout", h.signoutForm)
	h.Handle("GET /session", h.sessionInfo)
}

// localNext is where to go after sign-in: a path on this origin, "/"
// for anything else (no open redirect).
func localNext(next string) string {
	if next == "" || len(next) > 2048 || next[0] != '/' || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n\t\\") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return next
}

type signinView struct {
	Error, User, CSRF, Next, OIDC string
}

func (h *Handler) signinForm(w http.ResponseWriter, r *http.Request) {
	h.renderSignin(w, r, http.StatusOK, signinView{Next: localNext(r.URL.Query().Get("next"))})
}

// renderSignin shows the form with a fresh login-CSRF token (also set as
// a cookie: the form must send both, so another site cannot sign a
// browser in to an account of its choosing).
func (h *Handler) renderSignin(w http.ResponseWriter, r *http.Request, code int, v signinView) {
	v.CSRF = randomToken()
	if h.oidc != nil {
		v.OIDC = h.oidc.cfg.Label
	}
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: v.CSRF, Path: "/signin", MaxAge: 3600,
		HttpOnly: true, Secure: h.cfg.TLS, SameSite: http.SameSiteStrictMode})
	hd := w.Header()
	hd.Set("Content-Security-Policy", signinCSP)
	hd.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = signinPage.Execute(w, v)
}

func (h *Handler) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		Fail(w, r, http.StatusBadRequest, "cannot read the sign-in form")
		return
	}
	user, pass, next := r.PostForm.Get("user"), r.PostForm.Get("passcode"), localNext(r.PostForm.Get("next"))
	c, err := r.Cookie(signinCookie)
	if err != nil || !equalSecret(c.Value, r.PostForm.Get("csrf")) {
		h.renderSignin(w, r, http.StatusForbidden, signinView{Error: "The sign-in form expired; please sign in again.", User: user, Next: next})
		return
	}
	if user == "" || pass == "" || len(user) > maxUserLen || len(pass) > maxPasscodeLen {
		h.renderSignin(w, r, http.StatusBadRequest, signinView{Error: "Give a user name and a passcode.", User: "", Next: next})
		return
	}
	if h.cfg.Accounts == nil {
		h.renderSignin(w, r, http.StatusForbidden, signinView{Error: "Sign-in is not available.", Next: next})
		return
	}
	p, err := h.cfg.Accounts.SignIn(r, user, pass)
	var lo *LockedOut
	switch {
	case errors.As(err, &lo):
		secs := int(time.Until(lo.Until).Seconds()) + 1
		w.Header().Set("Retry-After", itoa(max(secs, 1)))
		h.renderSignin(w, r, http.StatusTooManyRequests, signinView{Error: "Too many failed sign-ins: try again later.", User: user, Next: next})
		return
	case err != nil || p == nil:
		h.renderSignin(w, r, http.StatusUnauthorized, signinView{Error: "Unknown user or wrong passcode.", User: user, Next: next})
		return
	}
	// A new session every time (no fixation): an old one this browser
	// held ends.
	if _, old, _ := h.sessionOf(r); old != "" {
		_, _ = h.sessions.end(old)
	}
	id, _, err := h.sessions.create(p.Name, false, nil)
	if err != nil {
		h.cfg.Logger.Error("session not created", "err", err.Error())
		Fail(w, r, http.StatusServiceUnavailable, errSessions.Error())
		return
	}
	h.setSessionCookie(w, id, int(h.sessions.opts.Absolute.Seconds()))
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: "", Path: "/signin", MaxAge: -1, HttpOnly: true, Secure: h.cfg.TLS, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// signout ends the session. It needs the CSRF token (header, or a csrf
// form field) so that another site cannot sign the user out.
func (h *Handler) signout(w http.ResponseWriter, r *http.Request) {
	ss, id, err := h.sessionOf(r)
	if err != nil {
		w.Header().Set("Retry-After", "5")
		Fail(w, r, http.StatusServiceUnavailable, errSessions.Error())
		return
	}
	if ss == nil {
		h.setSessionCookie(w, "", -1)
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
		return
	}
	token := r.Header.Get("X-CSRF-Token")
	if token == "" {
		r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
		if err := r.ParseForm(); err == nil {
			token = r.PostForm.Get("csrf")
		}
	}
	if !equalSecret(token, ss.csrf) {
		Fail(w, r, http.StatusForbidden, errCSRF.Error())
		return
	}
	if _, err := h.sessions.end(id); err != nil {
		h.cfg.Logger.Error("session not ended", "err", err.Error())
		w.Header().Set("Retry-After", "5")
		Fail(w, r, http.StatusServiceUnavailable, "the session could not be ended: "+errSessions.Error())
		return
	}
	h.setSessionCookie(w, "", -1)
	if h.cfg.Accounts != nil {
		h.cfg.Accounts.SignedOut(r, ss.user, "signed out")
	}
	if r.Header.Get("X-CSRF-Token") != "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// sessionInfo tells the page who is signed in and the CSRF token its
// state-changing requests need (same origin only: no CORS for it).
func (h *Handler) sessionInfo(w http.ResponseWriter, r *http.Request) {
	p := Principal(r.Context())
	out := map[string]any{"user": p.Name, "roles": p.Roles}
	if ss, _, _ := h.sessionOf(r); ss != nil {
		out["csrf"] = ss.csrf
		out["expires"] = ss.created.Add(h.sessions.opts.Absolute).UTC().Format(time.RFC3339)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
