package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/ward-pacs/ward/archive"
)

// OpenID Connect sign-in: the authorization code flow with PKCE (RFC
// 7636, S256) against the configured provider. The ID token is verified
// by go-oidc (signature from the provider's published keys, issuer,
// audience, expiry, nonce); the user's roles come from one of its claims,
// mapped onto Ward's. The flow's state is bound to the browser by a
// cookie, so that a callback started elsewhere is refused (login CSRF).

// OIDCConfig configures OpenID Connect sign-in.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL (discovery at
	// Issuer/.well-known/openid-configuration).
	Issuer       string
	ClientID     string
	ClientSecret string
	// RolesClaim names the ID token claim holding the user's roles: a
	// string or a list of strings; a dotted path reaches into objects
	// (realm_access.roles).
	RolesClaim string
	// RoleMap maps the provider's role names to Ward's (viewer, uploader,
	// admin); empty: the names are Ward's own.
	RoleMap map[string]string
	// Scopes beyond openid (default profile, email).
	Scopes []string
	// Label names the provider on the sign-in page.
	Label string
	// Client is the HTTP client for the provider (nil: a default with a
	// timeout).
	Client *http.Client
}

// Bounds of the flow.
const (
	oidcFlowLifetime = 10 * time.Minute
	oidcMaxFlows     = 10000
	oidcStateCookie  = "ward-oidc"
)

type oidcFlow struct {
	verifier, nonce, next string
	expires               time.Time
}

// oidcClient is the provider, discovered at first use.
type oidcClient struct {
	cfg   OIDCConfig
	mu    sync.Mutex
	prov  *oidc.Provider
	flows map[string]*oidcFlow
}

func newOIDC(cfg *OIDCConfig) *oidcClient {
	if cfg == nil {
		return nil
	}
	c := *cfg
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 15 * time.Second}
	}
	if c.RolesClaim == "" {
		c.RolesClaim = "roles"
	}
	if c.Label == "" {
		c.Label = "single sign-on"
	}
	return &oidcClient{cfg: c, flows: map[string]*oidcFlow{}}
}

func (o *oidcClient) provider(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.prov != nil {
		return o.prov, nil
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, o.cfg.Client), o.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	o.prov = p
	return p, nil
}

func (o *oidcClient) oauth(p *oidc.Provider, redirect string) *oauth2.Config {
	scopes := append([]string{oidc.ScopeOpenID}, o.cfg.Scopes...)
	if len(o.cfg.Scopes) == 0 {
		scopes = append(scopes, "profile", "email")
	}
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, Endpoint: p.Endpoint(), RedirectURL: redirect, Scopes: scopes}
}

// put keeps a flow under its state, dropping expired ones when full.
func (o *oidcClient) put(state string, f *oidcFlow) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.flows) >= oidcMaxFlows {
		now := time.Now()
		for k, v := range o.flows {
			if now.After(v.expires) {
				delete(o.flows, k)
			}
		}
		if len(o.flows) >= oidcMaxFlows {
			return false
		}
	}
	o.flows[state] = f
	return true
}

// take removes and returns the live flow of state.
func (o *oidcClient) take(state string) *oidcFlow {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.flows[state]
	delete(o.flows, state)
	if f == nil || time.Now().After(f.expires) {
		return nil
	}
	return f
}

func (h *Handler) registerOIDC() {
	if h.oidc == nil {
		return
	}
	h.mux.HandleFunc("GET /oidc/login", h.oidcLogin)
	h.mux.HandleFunc("GET /oidc/callback", h.oidcCallback)
}

func (h *Handler) oidcRedirect(r *http.Request) string { return h.BaseURL(r) + "/oidc/callback" }

func (h *Handler) oidcLogin(w http.ResponseWriter, r *http.Request) {
	p, err := h.oidc.provider(r.Context())
	if err != nil {
		h.cfg.Logger.Warn("OpenID provider unreachable", "issuer", h.oidc.cfg.Issuer, "err", err.Error())
		Fail(w, r, http.StatusBadGateway, "the sign-in provider cannot be reached; try again, or sign in with a passcode")
		return
	}
	state, nonce, verifier := randomToken(), randomToken(), oauth2.GenerateVerifier()
	if !h.oidc.put(state, &oidcFlow{verifier: verifier, nonce: nonce, next: localNext(r.URL.Query().Get("next")), expires: time.Now().Add(oidcFlowLifetime)}) {
		Fail(w, r, http.StatusServiceUnavailable, "too many sign-ins under way; try again in a few minutes")
		return
	}
	// Lax: the provider's redirect back is a cross-site top-level GET.
	http.SetCookie(w, &http.Cookie{Name: oidcStateCookie, Value: state, Path: "/oidc/", MaxAge: int(oidcFlowLifetime.Seconds()),
		HttpOnly: true, Secure: h.cfg.TLS, SameSite: http.SameSiteLaxMode})
	u := h.oidc.oauth(p, h.oidcRedirect(r)).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
	http.Redirect(w, r, u, http.StatusFound)
}

// errOIDC is a refused OpenID sign-in; its text is shown.
var errOIDC = errors.New("single sign-on refused")

func (h *Handler) oidcCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	c, cerr := r.Cookie(oidcStateCookie)
	http.SetCookie(w, &http.Cookie{Name: oidcStateCookie, Value: "", Path: "/oidc/", MaxAge: -1, HttpOnly: true, Secure: h.cfg.TLS, SameSite: http.SameSiteLaxMode})
	if cerr != nil || state == "" || !equalSecret(c.Value, state) {
		h.oidcFailed(w, r, "", "the sign-in did not start in this browser (or took over 10 minutes)")
		return
	}
	f := h.oidc.take(state)
	if f == nil {
		h.oidcFailed(w, r, "", "the sign-in expired or was already used")
		return
	}
	if e := q.Get("error"); e != "" {
		h.oidcFailed(w, r, "", "the provider refused: "+truncate(e, 64))
		return
	}
	user, roles, err := h.oidcExchange(r, f, q.Get("code"))
	if err != nil {
		h.oidcFailed(w, r, user, err.Error())
		return
	}
	var p *archive.Principal
	if h.cfg.Accounts != nil {
		p = h.cfg.Accounts.External(r, user, roles)
	}
	if p == nil {
		h.oidcFailed(w, r, user, "no Ward role")
		return
	}
	if _, old, _ := h.sessionOf(r); old != "" {
		_, _ = h.sessions.end(old)
	}
	id, _, err := h.sessions.create(user, true, roles)
	if err != nil {
		h.cfg.Logger.Error("session not created", "err", err.Error())
		Fail(w, r, http.StatusServiceUnavailable, errSessions.Error())
		return
	}
	h.setSessionCookie(w, id, int(h.sessions.opts.Absolute.Seconds()))
	// A page of this origin moves on: a redirect would continue the
	// provider's cross-site navigation, on which the browser does not send
	// the SameSite=Strict session cookie.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = continuePage.Execute(w, f.next)
}

var continuePage = template.Must(template.New("continue").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={{.}}"><title>Ward</title></head><body><a href="{{.}}">Continue</a></body></html>
`))

// oidcExchange redeems the code (with the PKCE verifier), verifies the
// ID token and reads the user and its Ward roles.
func (h *Handler) oidcExchange(r *http.Request, f *oidcFlow, code string) (user string, roles []string, err error) {
	ctx := oidc.ClientContext(r.Context(), h.oidc.cfg.Client)
	p, err := h.oidc.provider(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("the provider cannot be reached")
	}
	if code == "" || len(code) > 4096 {
		return "", nil, fmt.Errorf("%w: no authorization code", errOIDC)
	}
	tok, err := h.oidc.oauth(p, h.oidcRedirect(r)).Exchange(ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		return "", nil, fmt.Errorf("%w: the code was not redeemed", errOIDC)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", nil, fmt.Errorf("%w: no ID token", errOIDC)
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: h.oidc.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return "", nil, fmt.Errorf("%w: ID token not valid: %v", errOIDC, err)
	}
	if !equalSecret(idt.Nonce, f.nonce) {
		return "", nil, fmt.Errorf("%w: ID token nonce mismatch", errOIDC)
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return "", nil, fmt.Errorf("%w: access token hash mismatch", errOIDC)
		}
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return "", nil, fmt.Errorf("%w: unreadable claims", errOIDC)
	}
	user = idt.Subject
	for _, k := range []string{"preferred_username", "email"} {
		if v, ok := claims[k].(string); ok && v != "" {
			user = v
			break
		}
	}
	user = truncate(user, 128)
	return user, h.oidc.mapRoles(claimPath(claims, h.oidc.cfg.RolesClaim)), nil
}

// claimPath reads a dotted path of claims as a list of strings.
func claimPath(claims map[string]any, path string) []string {
	var v any = claims
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	switch t := v.(type) {
	case string:
		return strings.Fields(strings.ReplaceAll(t, ",", " "))
	case []any:
		var out []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// mapRoles maps the provider's roles onto Ward's (deduplicated, in
// Ward's order); unknown ones are dropped.
func (o *oidcClient) mapRoles(idp []string) []string {
	have := map[string]bool{}
	for _, r := range idp {
		if len(o.cfg.RoleMap) > 0 {
			r = o.cfg.RoleMap[r]
		}
		have[r] = true
	}
	var out []string
	for _, r := range []string{"viewer", "uploader", "admin"} {
		if have[r] {
			out = append(out, r)
		}
	}
	return out
}

func (h *Handler) oidcFailed(w http.ResponseWriter, r *http.Request, user, why string) {
	if h.cfg.Accounts != nil {
		h.cfg.Accounts.ExternalFailed(r, user, why)
	}
	h.renderSignin(w, r, http.StatusForbidden, signinView{Error: "Single sign-on failed: " + why + "."})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
