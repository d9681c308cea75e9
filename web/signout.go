package web

import (
	"html/template"
	"net/http"
)

// The sign-out page: GET /signout shows who is signed in and a button
// that posts the sign-out with the session's CSRF token (the viewer links
// here; a page without script, so its CSP stays the sign-in page's).
var signoutPage = template.Must(template.New("signout").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Ward: sign out</title><style>` + signinStyle + `</style></head>
<body><form method="post" action="/signout">
<h1>Ward</h1>
<p>Signed in as {{.User}}.</p>
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit">Sign out</button>
<a href="/">Back to the viewer</a>
</form></body></html>
`))

func (h *Handler) signoutForm(w http.ResponseWriter, r *http.Request) {
	ss, _, err := h.sessionOf(r)
	if err != nil {
		Fail(w, r, http.StatusServiceUnavailable, errSessions.Error())
		return
	}
	if ss == nil {
		// A bearer token, not a session: nothing to sign out of here.
		Fail(w, r, http.StatusBadRequest, "this request has no browser session to sign out of")
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", signinCSP)
	hd.Set("Content-Type", "text/html; charset=utf-8")
	_ = signoutPage.Execute(w, struct{ User, CSRF string }{ss.user, ss.csrf})
}
