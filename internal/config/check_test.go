package config

import (
	"strings"
	"testing"
)

// TestNetworkUnion: plaintext_networks and a peer's networks are judged as
// a union. Two /1 halves were accepted while a /0 was refused (issue 14,
// item 12).
func TestNetworkUnion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nets    []string
		refused bool
		public  bool   // a finding names public ranges
		want    string // in the finding's problem
	}{
		{"private /16", []string{"10.20.0.0/16"}, false, false, ""},
		{"every private range", []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8", "fe80::/10"}, false, false, ""},
		{"loopback and link-local", []string{"127.0.0.0/8", "169.254.0.0/16", "::1/128"}, false, false, ""},
		{"zero", []string{"0.0.0.0/0"}, true, false, "every address"},
		{"IPv4 halves", []string{"0.0.0.0/1", "128.0.0.0/1"}, true, false, "every address"},
		{"IPv6 halves", []string{"::/1", "8000::/1"}, true, false, "every address"},
		{"both families' halves", []string{"0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"}, true, false, "every address"},
		{"quarters, one written twice", []string{"0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2", "64.0.0.0/2"}, true, false, "every address"},
		{"halves with a nested entry", []string{"0.0.0.0/1", "10.0.0.0/8", "128.0.0.0/1"}, true, false, "every address"},
		{"mapped IPv4 in IPv6", []string{"::ffff:0.0.0.0/96"}, true, false, "every address"},
		{"mapped IPv4 halves", []string{"::ffff:0.0.0.0/97", "::ffff:128.0.0.0/97"}, true, false, "every address"},
		{"an IPv6 prefix holding the mapped range", []string{"::/64"}, true, false, "every address"},
		{"a mapped private network", []string{"::ffff:10.0.0.0/104"}, false, false, ""},
		{"one half", []string{"0.0.0.0/1"}, true, false, "large part of the internet"},
		{"a public /8", []string{"11.0.0.0/8"}, true, false, "large part"},
		{"public /9 halves make a /8", []string{"11.0.0.0/9", "11.128.0.0/9"}, true, false, "large part"},
		{"a /7 that holds 10/8", []string{"10.0.0.0/7"}, true, false, "large part"},
		{"IPv6 global unicast", []string{"2000::/3"}, true, false, "large part"},
		{"an IPv6 /32", []string{"2001:db8::/32"}, true, false, "large part"},
		{"a public /16", []string{"130.1.0.0/16"}, false, true, "public addresses"},
		{"a public address", []string{"10.0.0.0/8", "203.0.113.7/32"}, false, true, "public addresses"},
		{"an IPv6 /48", []string{"2001:db8:1::/48"}, false, true, "public addresses"},
		{"a private /8 and public /9", []string{"10.0.0.0/8", "11.0.0.0/9"}, false, true, "public addresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain := Default()
			plain.DICOM.Listen = "0.0.0.0:11112"
			plain.DICOM.PlaintextNetworks = tc.nets
			peer := Default()
			peer.Peers = []Peer{{AETitle: "CT", Networks: tc.nets, Allow: []string{"store"}}}
			for _, c := range []struct {
				what string
				cfg  *Config
			}{{"plaintext_networks", plain}, {"peer networks", peer}} {
				fs := c.cfg.Check()
				var hit *Finding
				for i := range fs {
					if strings.Contains(fs[i].Setting, "networks") && (fs[i].Refuse || strings.Contains(fs[i].Problem, "public")) {
						hit = &fs[i]
						break
					}
				}
				switch {
				case tc.want == "" && hit != nil:
					t.Errorf("%s: unexpected finding %s", c.what, hit)
				case tc.want == "":
				case hit == nil:
					t.Errorf("%s: no finding, want %q: %v", c.what, tc.want, fs)
				case !strings.Contains(strings.Replace(hit.Problem, "from any address", "from every address", 1), tc.want) || hit.Refuse != tc.refused:
					t.Errorf("%s: finding %s, want %q refused=%v", c.what, hit, tc.want, tc.refused)
				}
			}
			// A pinned certificate authenticates a peer wherever it is.
			peer.Peers[0].CertFingerprint = strings.Repeat("ab", 32)
			for _, f := range peer.Check() {
				if f.Refuse || strings.Contains(f.Problem, "public") {
					t.Errorf("pinned peer: %s", f)
				}
			}
			// Validate refuses plaintext for every address before anything else.
			if err := plain.Validate(); (err != nil && strings.Contains(err.Error(), "every address")) != (tc.want == "every address") {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// TestCheckProxyFrom: proxy_from names load balancers; a list open to
// every address or a large part of the internet is refused, a wide one
// is high, a few hosts pass.
func TestCheckProxyFrom(t *testing.T) {
	for _, tc := range []struct {
		list   []string
		sev    Severity // -1: no finding
		refuse bool
	}{
		{[]string{"10.0.0.5", "10.0.0.6"}, -1, false},
		{[]string{"10.0.0.0/29"}, -1, false},
		{[]string{"0.0.0.0/0"}, Critical, true},
		{[]string{"::/0"}, Critical, true},
		{[]string{"0.0.0.0/1", "128.0.0.0/1"}, Critical, true},
		{[]string{"8.0.0.0/7"}, Critical, true},
		{[]string{"10.0.0.0/16"}, High, false},
		{[]string{"2001:db8::/64"}, High, false},
		{[]string{"haproxy"}, Critical, true},
	} {
		for _, section := range []string{"dicom", "web"} {
			c := Default()
			if section == "dicom" {
				c.DICOM.ProxyFrom = tc.list
			} else {
				c.Web.ProxyFrom = tc.list
			}
			var got *Finding
			for _, f := range c.Check() {
				if strings.HasPrefix(f.Setting, "["+section+"] proxy_from") {
					got = &f
				}
			}
			switch {
			case tc.sev < 0 && got != nil:
				t.Errorf("%s %v: %s", section, tc.list, got)
			case tc.sev >= 0 && (got == nil || got.Severity != tc.sev || got.Refuse != tc.refuse):
				t.Errorf("%s %v: got %v, want %s refuse=%v", section, tc.list, got, tc.sev, tc.refuse)
			}
			if err := c.Validate(); (err != nil) != (tc.list[0] == "haproxy") {
				t.Errorf("%s %v: Validate: %v", section, tc.list, err)
			}
		}
	}
}
