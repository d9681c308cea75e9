package web

import (
	"errors"
	"html/template"
	"net/http"
	"net/netip"
)

// First run: with no user that can sign in, `ward serve` prints a one-time
// set-up link on its terminal (never in the log). The link's token is
// random, works once, for an hour, and only over loopback or HTTPS; the
// page it opens creates the first administrator and signs it in. There is
// never a default password.

// Setup creates the first administrator; internal/server implements it.
type Setup interface {
	// Open reports whether a set-up token is still waiting to be used.
	Open() bool
	// Valid reports whether token is the set-up token, unused and not
	// expired (constant time).
	Valid(token string) bool
	// CreateAdmin uses the token up and creates user as an admin with
	// passcode; its error text is shown to the person setting up.
	CreateAdmin(r *http.Request, token, user, passcode string) error
}

// MinAdminPasscode is the shortest passcode the first administrator may
// choose.
const MinAdminPasscode = 12

var setupPage = template.Must(template.New("setup").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Ward: first administrator</title><style>` + signinStyle + `</style></head>
<body><form method="post" action="/setup">
<h1>Ward: first administrator</h1>
{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
<label>User <input name="user" autocomplete="username" required maxlength="64" value="{{.User}}" autofocus></label>
<label>Passcode (at least 12 characters) <input name="passcode" type="password" autocomplete="new-password" required minlength="12" maxlength="1024"></label>
<label>Again <input name="again" type="password" autocomplete="new-password" required minlength="12" maxlength="1024"></label>
<input type="hidden" name="token" value="{{.Token}}">
<button type="submit">Create and sign in</button>
</form></body></html>
`))

type setupView struct{ Error, User, Token string }

func (h *Handler) registerSetup() {
	h.mux.HandleFunc("GET /setup", h.setupForm)
	h.mux.HandleFunc("POST /setup", h.setup)
}

// setupAllowed: set-up only over HTTPS or from this machine.
func (h *Handler) setupAllowed(w http.ResponseWriter, r *http.Request) bool {
	if h.cfg.Setup == nil || !h.cfg.Setup.Open() {
		Fail(w, r, http.StatusNotFound, "no set-up is waiting: sign in, or add users with ward user add")
		return false
	}
	if a, err := netip.ParseAddr(SourceAddr(r)); r.TLS == nil && (err != nil || !a.Unmap().IsLoopback()) {
		Fail(w, r, http.StatusForbidden, "set-up is served over HTTPS or from this machine only")
		return false
	}
	return true
}

func (h *Handler) renderSetup(w http.ResponseWriter, code int, v setupView) {
	w.Header().Set("Content-Security-Policy", signinCSP)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = setupPage.Execute(w, v)
}

func (h *Handler) setupForm(w http.ResponseWriter, r *http.Request) {
	if !h.setupAllowed(w, r) {
		return
	}
	token := r.URL.Query().Get("token")
	if !h.cfg.Setup.Valid(token) {
		Fail(w, r, http.StatusForbidden, "this set-up link is not valid (used, expired, or mistyped): restart ward serve for a new one")
		return
	}
	h.renderSetup(w, http.StatusOK, setupView{Token: token})
}

func (h *Handler) setup(w http.ResponseWriter, r *http.Request) {
	if !h.setupAllowed(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		Fail(w, r, http.StatusBadRequest, "cannot read the set-up form")
		return
	}
	f := r.PostForm
	token, user, pass := f.Get("token"), f.Get("user"), f.Get("passcode")
	if !h.cfg.Setup.Valid(token) {
		Fail(w, r, http.StatusForbidden, "this set-up link is not valid (used, expired, or mistyped): restart ward serve for a new one")
		return
	}
	v := setupView{User: user, Token: token}
	switch {
	case len(pass) < MinAdminPasscode:
		v.Error = "The passcode must have at least 12 characters."
	case pass != f.Get("again"):
		v.Error = "The two passcodes differ."
	}
	if v.Error == "" {
		if err := h.cfg.Setup.CreateAdmin(r, token, user, pass); err != nil {
			v.Error = err.Error()
		}
	}
	if v.Error != "" {
		h.renderSetup(w, http.StatusBadRequest, v)
		return
	}
	if h.cfg.Accounts == nil || h.cfg.Accounts.Principal(user) == nil {
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
		return
	}
	id, _, err := h.sessions.create(user, false, nil)
	if err != nil {
		h.cfg.Logger.Error("session not created", "err", err.Error())
		Fail(w, r, http.StatusServiceUnavailable, errSessions.Error())
		return
	}
	h.setSessionCookie(w, id, int(h.sessions.opts.Absolute.Seconds()))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// ErrSetupUsed: the set-up token was used, or expired.
var ErrSetupUsed = errors.New("this set-up link is not valid any more")
