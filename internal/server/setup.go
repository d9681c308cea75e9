package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/policy/identity"
	"github.com/ward-pacs/ward/web"
)

// SetupLifetime is how long the first-run set-up link works.
const SetupLifetime = time.Hour

// firstRun is the one-time set-up token (web/setup.go): its hash, expiry
// and whether it was used.
type firstRun struct {
	s       *Server
	mu      sync.Mutex
	hash    [32]byte
	expires time.Time
	used    bool
}

var _ web.Setup = (*firstRun)(nil)

// startSetup makes a set-up token when nobody can sign in (no user has a
// role) and the users can be written (ConfigFile), and prints the link on
// SetupOut. It returns nil when no set-up is needed.
func (s *Server) startSetup() *firstRun {
	if s.webLn == nil || s.ConfigFile == "" || s.Load == nil || s.SetupOut == nil {
		return nil
	}
	if s.someoneCanSignIn() {
		return nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		s.Logger.Error("no set-up link: no random source", "err", err.Error())
		return nil
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	fr := &firstRun{s: s, hash: sha256.Sum256([]byte(token)), expires: time.Now().Add(SetupLifetime)}
	fmt.Fprintf(s.SetupOut, "\nNo user can sign in yet. Create the first administrator (this link works once, within an hour, from this machine or over HTTPS):\n\n    %s/setup?token=%s\n\n", s.setupBase(), token)
	s.Logger.Info("first-run set-up link printed on the terminal (not logged)", "expires", fr.expires.UTC().Format(time.RFC3339))
	return fr
}

// setupBase is the address the set-up link names: base_url, or the web
// listener's (an unspecified address as loopback).
func (s *Server) setupBase() string {
	if b := s.Config.Web.BaseURL; b != "" {
		return strings.TrimSuffix(b, "/")
	}
	scheme := "http"
	if s.webTLS != nil {
		scheme = "https"
	}
	host, port, _ := net.SplitHostPort(s.webLn.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// someoneCanSignIn reports whether a user has a role now (the set-up is
// then over, whoever added the user).
func (s *Server) someoneCanSignIn() bool {
	if t := s.tokens.Load(); t != nil {
		for _, roles := range t.roles {
			if len(roles) > 0 {
				return true
			}
		}
	}
	return false
}

func (f *firstRun) Open() bool {
	if f == nil || f.s.someoneCanSignIn() {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.used && time.Now().Before(f.expires)
}

func (f *firstRun) Valid(token string) bool {
	if f == nil || f.s.someoneCanSignIn() {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	f.mu.Lock()
	defer f.mu.Unlock()
	return subtle.ConstantTimeCompare(sum[:], f.hash[:]) == 1 && !f.used && time.Now().Before(f.expires)
}

// CreateAdmin uses the token up first (a second request with it fails
// even while the first is running), then adds the user to the
// configuration file with the admin role and puts it in effect.
func (f *firstRun) CreateAdmin(r *http.Request, token, user, passcode string) error {
	if err := config.CheckUserName(user); err != nil {
		return err
	}
	if !f.Valid(token) {
		return web.ErrSetupUsed
	}
	hash, err := identity.HashPasscode(passcode)
	if err != nil {
		return err
	}
	f.mu.Lock()
	if f.used {
		f.mu.Unlock()
		return web.ErrSetupUsed
	}
	f.used = true
	f.mu.Unlock()
	s := f.s
	admin := config.User{Name: user, Hash: hash, Roles: []string{"admin"}}
	if s.shared != nil {
		err = s.addSharedUser(r.Context(), admin, "first-run set-up from "+web.SourceAddr(r))
	} else {
		err = config.EditUsers(s.ConfigFile, func(users []config.User) ([]config.User, error) {
			for _, u := range users {
				if u.Name == user {
					return nil, fmt.Errorf("user %q exists already", user)
				}
			}
			return append(users, admin), nil
		})
	}
	if err == nil {
		_, err = s.ReloadConfig("first-run set-up from " + web.SourceAddr(r))
	}
	if err != nil {
		f.mu.Lock()
		f.used = false // nothing was created: the link may be tried again
		f.mu.Unlock()
		s.Logger.Error("first-run set-up failed", "err", err.Error())
		return fmt.Errorf("could not create the user: %v", err)
	}
	s.Logger.Info("first administrator created", "user", user)
	s.record(audit.Authentication(s.wardNode(), audit.Node{AETitle: user, Addr: web.SourceAddr(r)}, true, "first administrator created with the set-up link", time.Now()))
	return nil
}
