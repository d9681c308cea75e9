package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/policy"
)

const (
	testArgon  = "$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA"
	testBcrypt = "$2b$04$abcdefghijklmnopqrstuuJ1M0eHRmhXn4y0eI5Grx5n8Y5P2H3Wa"
)

func TestCheckPasscodeHash(t *testing.T) {
	for _, tc := range []struct {
		hash string
		ok   bool
	}{
		{testArgon, true},
		{testBcrypt, true},
		{"$2a$" + testBcrypt[4:], true},
		{"$2y$" + testBcrypt[4:], true},
		{"", false},
		{"hunter2", false},
		{"$argon2i$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$argon2id$v=16$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$argon2id$v=19$m=19456,t=2$MDEyMzQ1Njc4OWFiY2RlZg$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$argon2id$v=19$t=2,m=19456,p=1$MDEyMzQ1Njc4OWFiY2RlZg$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$argon2id$v=19$m=999999999,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$argon2id$v=19$m=19456,t=0,p=1$MDEyMzQ1Njc4OWFiY2RlZg$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$argon2id$v=19$m=19456,t=2,p=1$short$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$qKMd0bJ3rn3MfQHC0A+wDkb3tEVhUwjKpBzsl7Mh6yA", false},
		{"$2b$03$" + testBcrypt[7:], false},
		{testBcrypt[:59], false},
		{"$2b$04$" + strings.Repeat("!", 53), false},
	} {
		err := CheckPasscodeHash(tc.hash)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadUser)) {
			t.Errorf("%q: %v", tc.hash, err)
		}
	}
}

func TestValidateUsers(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"default", func(c *Config) {}, ""},
		{"users", func(c *Config) {
			c.Users = []User{{Name: "alice", Hash: testArgon}, {Name: "Dr. Ünal", Hash: testBcrypt}}
		}, ""},
		{"jwt", func(c *Config) {
			c.Identity = Identity{JWKS: "https://idp.example.test/jwks", JWTIssuer: "https://idp.example.test", JWTAudience: "ward", ClockSkew: Duration{5 * time.Minute}}
		}, ""},
		{"jwt from a file", func(c *Config) {
			c.Identity = Identity{JWKS: "/etc/ward/jwks.json", JWTIssuer: "i", JWTAudience: "a"}
		}, ""},
		{"duplicate", func(c *Config) { c.Users = []User{{Name: "a", Hash: testArgon}, {Name: "a", Hash: testBcrypt}} }, "twice"},
		{"empty name", func(c *Config) { c.Users = []User{{Name: "", Hash: testArgon}} }, "1 to 64"},
		{"long name", func(c *Config) { c.Users = []User{{Name: strings.Repeat("é", 65), Hash: testArgon}} }, "1 to 64"},
		{"64 characters", func(c *Config) { c.Users = []User{{Name: strings.Repeat("é", 64), Hash: testArgon}} }, ""},
		{"control character", func(c *Config) { c.Users = []User{{Name: "a\x00b", Hash: testArgon}} }, "printable"},
		{"spaces", func(c *Config) { c.Users = []User{{Name: "a ", Hash: testArgon}} }, "leading or trailing"},
		{"invalid UTF-8", func(c *Config) { c.Users = []User{{Name: "a\xffb", Hash: testArgon}} }, "UTF-8"},
		{"plain passcode", func(c *Config) { c.Users = []User{{Name: "a", Hash: "secret"}} }, "neither argon2id"},
		{"jwks without issuer", func(c *Config) { c.Identity = Identity{JWKS: "/j.json", JWTAudience: "a"} }, "needs jwt_issuer"},
		{"jwks without audience", func(c *Config) { c.Identity = Identity{JWKS: "/j.json", JWTIssuer: "i"} }, "needs jwt_issuer"},
		{"issuer without jwks", func(c *Config) { c.Identity = Identity{JWTIssuer: "i"} }, "need jwks"},
		{"plain http jwks", func(c *Config) { c.Identity = Identity{JWKS: "http://idp/jwks", JWTIssuer: "i", JWTAudience: "a"} }, "https://"},
		{"ftp jwks", func(c *Config) { c.Identity = Identity{JWKS: "ftp://idp/jwks", JWTIssuer: "i", JWTAudience: "a"} }, "https://"},
		{"skew too large", func(c *Config) { c.Identity.ClockSkew = Duration{5*time.Minute + time.Second} }, "clock_skew"},
		{"negative skew", func(c *Config) { c.Identity.ClockSkew = Duration{-time.Second} }, "clock_skew"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(c)
			err := c.ValidateUsers()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadUser) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	var id Identity
	if id.ClockSkewOrDefault() != DefaultClockSkew {
		t.Fatal("zero clock skew is not the default")
	}
}

func TestEditUsersKeepsEveryOtherLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.toml")
	head := `# site config
aet = "WARD"   # our title

[[users]]
name = "old"
hash = "` + testBcrypt + `"

[dicom]
listen = "127.0.0.1:11112"  # loopback

[[peers]]
aet = "VIEWER"
allow = ["find"]
`
	if err := os.WriteFile(path, []byte(head), 0o644); err != nil {
		t.Fatal(err)
	}
	err := EditUsers(path, func(u []User) ([]User, error) {
		return append(u, User{Name: "new", Hash: testArgon}), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `# site config
aet = "WARD"   # our title

[dicom]
listen = "127.0.0.1:11112"  # loopback

[[peers]]
aet = "VIEWER"
allow = ["find"]

[[users]]
  name = "old"
  hash = "` + testBcrypt + `"

[[users]]
  name = "new"
  hash = "` + testArgon + `"
`
	if string(b) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b, want)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	// Removing every user leaves the rest as it was.
	if err := EditUsers(path, func([]User) ([]User, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if strings.Contains(string(b), "users") || !strings.Contains(string(b), `allow = ["find"]`) || !strings.HasSuffix(string(b), "allow = [\"find\"]\n") {
		t.Fatalf("after removing all users:\n%s", b)
	}
}

func TestEditUsersInlineArrayAndMissingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ward.toml")
	if err := os.WriteFile(path, []byte(`aet = "WARD"
users = [{name = "a", hash = "`+testBcrypt+`"}]
[dicom]
listen = "127.0.0.1:11112"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EditUsers(path, func(u []User) ([]User, error) { return append(u, User{Name: "b", Hash: testArgon}), nil }); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, false)
	if err != nil || len(c.Users) != 2 || c.Users[1].Name != "b" || c.DICOM.Listen != "127.0.0.1:11112" {
		t.Fatalf("%+v %v", c, err)
	}

	missing := filepath.Join(dir, "sub", "ward.toml")
	if err := EditUsers(missing, func(u []User) ([]User, error) { return append(u, User{Name: "a", Hash: testArgon}), nil }); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(missing, false); err != nil || len(c.Users) != 1 {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestEditUsersRefusesInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.toml")
	orig := []byte("aet = \"WARD\"\n")
	os.WriteFile(path, orig, 0o600)
	for _, users := range [][]User{
		{{Name: "a", Hash: "plain"}},
		{{Name: "a", Hash: testArgon}, {Name: "a", Hash: testArgon}},
	} {
		if err := EditUsers(path, func([]User) ([]User, error) { return users, nil }); !errors.Is(err, ErrBadUser) {
			t.Fatalf("%v: %v", users, err)
		}
	}
	edit := errors.New("edit refused")
	if err := EditUsers(path, func([]User) ([]User, error) { return nil, edit }); !errors.Is(err, edit) {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(orig) {
		t.Fatalf("a refused edit changed the file:\n%s", b)
	}
}

func TestUserRoles(t *testing.T) {
	h := testArgon
	for _, tc := range []struct {
		roles []string
		ok    bool
	}{
		{nil, true},
		{[]string{"viewer"}, true},
		{[]string{"viewer", "uploader", "admin"}, true},
		{[]string{"root"}, false},
		{[]string{"viewer", "viewer"}, false},
		{[]string{"Viewer"}, false},
	} {
		c := Config{Users: []User{{Name: "ana", Hash: h, Roles: tc.roles}}}
		if err := c.ValidateUsers(); (err == nil) != tc.ok {
			t.Errorf("roles %v: %v", tc.roles, err)
		}
	}
	c := Config{Users: []User{{Name: "ana", Hash: h, Roles: []string{"uploader"}}, {Name: "bob", Hash: h}}}
	r, _, err := c.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Roles["ana"]) != 1 || r.Roles["ana"][0] != policy.Uploader || r.Roles["bob"] != nil {
		t.Fatalf("roles %v", r.Roles)
	}
}
