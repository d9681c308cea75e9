package server

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/internal/config"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestFirstRunSetup: with no user that can sign in, ward serve prints a
// one-time link on its terminal; the link creates the first administrator
// (written to the configuration file, in effect at once) and signs it in,
// and works only once.
func TestFirstRunSetup(t *testing.T) {
	out := &syncBuffer{}
	s, _ := testServer(t, nil, func(s *Server) {
		s.ConfigFile = filepath.Join(s.Config.DataDir, config.ConfigFileName)
		s.SetupOut = out
		base := *s.Config
		s.Load = func() (*config.Config, error) {
			f, err := config.Load(s.ConfigFile, true)
			if err != nil {
				return nil, err
			}
			c := base
			c.Users = f.Users
			return &c, nil
		}
	})
	base := "http://" + s.WebAddr().String()
	var link string
	for range 100 {
		if m := regexp.MustCompile(`(http://\S+/setup\?token=\S+)`).FindStringSubmatch(out.String()); m != nil {
			link = m[1]
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if link == "" || !strings.HasPrefix(link, base+"/setup?token=") {
		t.Fatalf("no set-up link on the terminal (%q), want one at %s", out.String(), base)
	}
	token := strings.TrimPrefix(link, base+"/setup?token=")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) int {
		rs, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, rs.Body)
		rs.Body.Close()
		return rs.StatusCode
	}
	post := func(v url.Values) (int, string) {
		rs, err := c.PostForm(base+"/setup", v)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rs.Body)
		rs.Body.Close()
		return rs.StatusCode, string(b)
	}
	if code := get(base + "/setup?token=wrong"); code != 403 {
		t.Fatalf("wrong token: %d", code)
	}
	if code := get(link); code != 200 {
		t.Fatalf("set-up page: %d", code)
	}
	if code, page := post(url.Values{"token": {token}, "user": {"root"}, "passcode": {"short"}, "again": {"short"}}); code != 400 || !strings.Contains(page, "12 characters") {
		t.Fatalf("short passcode: %d", code)
	}
	pass := "correct horse battery"
	if code, page := post(url.Values{"token": {token}, "user": {"root"}, "passcode": {pass}, "again": {pass}}); code != 303 {
		t.Fatalf("set-up: %d %s", code, page)
	}
	rs, err := c.Get(base + "/session")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rs.Body)
	rs.Body.Close()
	if rs.StatusCode != 200 || !strings.Contains(string(b), `"user":"root"`) || !strings.Contains(string(b), `"admin"`) {
		t.Fatalf("signed in after set-up: %d %s", rs.StatusCode, b)
	}
	// Once only.
	if code, _ := post(url.Values{"token": {token}, "user": {"other"}, "passcode": {pass}, "again": {pass}}); code != 404 {
		t.Fatalf("second use: %d", code)
	}
	f, err := config.Load(s.ConfigFile, false)
	if err != nil || len(f.Users) != 1 || f.Users[0].Name != "root" || f.Users[0].Roles[0] != "admin" || !strings.HasPrefix(f.Users[0].Hash, "$argon2id$") {
		t.Fatalf("configuration file: %+v %v", f, err)
	}
	if strings.Contains(out.String(), pass) {
		t.Fatal("the passcode reached the terminal")
	}
}
