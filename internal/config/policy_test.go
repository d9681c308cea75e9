package config

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"
)

// TestPolicyTranslation: every field of [[peers]], [dicom], [query],
// [[users]] and [identity] that policy and identity apply arrives in
// their types, parsed; what they cannot apply is refused here.
func TestPolicyTranslation(t *testing.T) {
	const hash = "$2b$04$abcdefghijklmnopqrstuu5FQl0ZDWbDQy3.0cKa5x5q3pM7m6pKm"
	c := Default()
	c.DICOM.LoopbackAnyAE = true
	c.DICOM.MaxAssociationsPerPeer = 7
	c.DICOM.PlaintextNetworks = []string{"10.1.0.0/16", "fd00::/8"}
	c.Query.MaxResults = 250
	c.DICOM.LockoutAfter = 0 // the default
	c.DICOM.LockoutBase = Duration{Duration: 3 * time.Second}
	c.DICOM.LockoutMax = Duration{Duration: time.Hour}
	c.Peers = []Peer{
		{AETitle: "CT", Host: "ct.example", Port: 104, Allow: []string{"echo", "store"}, RequireIdentity: true, MaxAssociations: 3, MaxResults: -1},
		{AETitle: "WS", Networks: []string{"10.1.2.0/24"}, CertFingerprint: strings.Repeat("AB:", 31) + "AB", RequireTLS: true, Allow: Services},
	}
	c.Users = []User{{Name: "alice", Hash: hash}}
	c.Identity = Identity{JWKS: "/etc/ward/jwks.json", JWTIssuer: "https://idp.example", JWTAudience: "ward"}
	rules, settings, err := c.Policy()
	if err != nil {
		t.Fatal(err)
	}
	want := policy.Rules{
		Peers: []policy.Peer{
			{AETitle: "CT", Host: "ct.example", Allow: []policy.Permission{policy.Echo, policy.Store}, RequireIdentity: true, MaxAssociations: 3, MaxResults: -1},
			{AETitle: "WS", Networks: []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")}, CertFingerprint: strings.Repeat("ab", 32), RequireTLS: true, Allow: policy.Permissions},
		},
		LoopbackAnyAE:          true,
		PlaintextNetworks:      []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/8")},
		MaxAssociationsPerPeer: 7,
		MaxResults:             250,
		Lockout:                policy.LockoutRule{After: DefaultLockoutAfter, Base: 3 * time.Second, Max: time.Hour},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("rules:\n got %+v\nwant %+v", rules, want)
	}
	wantS := identity.Settings{
		Users: []identity.User{{Name: "alice", Hash: hash}},
		JWKS:  "/etc/ward/jwks.json", JWTIssuer: "https://idp.example", JWTAudience: "ward",
		ClockSkew: DefaultClockSkew,
	}
	if !reflect.DeepEqual(settings, wantS) {
		t.Errorf("settings:\n got %+v\nwant %+v", settings, wantS)
	}
	c.Identity.ClockSkew = Duration{Duration: 5 * time.Second}
	c.DICOM.LockoutAfter = -1
	if r, s, _ := c.Policy(); s.ClockSkew != 5*time.Second || r.Lockout.After != -1 {
		t.Errorf("clock_skew 5s became %s, lockout_after -1 became %d", s.ClockSkew, r.Lockout.After)
	}

	for name, breakIt := range map[string]func(*Config){
		"network":     func(c *Config) { c.Peers[1].Networks = []string{"10.1.2.0"} },
		"plaintext":   func(c *Config) { c.DICOM.PlaintextNetworks = []string{"lan"} },
		"fingerprint": func(c *Config) { c.Peers[1].CertFingerprint = "abcd" },
		"service":     func(c *Config) { c.Peers[0].Allow = []string{"delete"} },
		"user":        func(c *Config) { c.Users = append(c.Users, c.Users[0]) },
	} {
		b := *c
		b.Peers = slices.Clone(c.Peers)
		b.Users = slices.Clone(c.Users)
		breakIt(&b)
		if _, _, err := b.Policy(); err == nil {
			t.Errorf("%s: translated", name)
		} else if name == "user" && !errors.Is(err, ErrBadUser) {
			t.Errorf("user: %v", err)
		}
	}
}

// TestServicesArePermissions: every service [[peers]] allow may name is a
// permission policy knows, in the same order.
func TestServicesArePermissions(t *testing.T) {
	var names []string
	for _, p := range policy.Permissions {
		names = append(names, string(p))
	}
	if !slices.Equal(names, Services) {
		t.Errorf("config.Services %v, policy.Permissions %v", Services, names)
	}
}
