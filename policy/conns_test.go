package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestBindsSource(t *testing.T) {
	old := LookupHost
	LookupHost = func(host string) ([]string, error) { return []string{"192.0.2.7"}, nil }
	defer func() { LookupHost = old }()
	c := defaultRules()
	c.Peers = []Peer{
		{AETitle: "BYHOST", Host: "10.1.2.3"},
		{AETitle: "BYNAME", Host: "modality.example"},
		{AETitle: "BYNET", Networks: nets("172.16.0.0/24")},
		{AETitle: "PINNED", CertFingerprint: strings.Repeat("ab", 32)},
		{AETitle: "NOWHERE"},
	}
	p, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.1.2.3": true, "10.1.2.4": false, "192.0.2.7": true, "172.16.0.99": true, "172.16.1.1": false,
		"::ffff:10.1.2.3": true, "127.0.0.1": false, "2001:db8::1": false,
	} {
		if got := p.BindsSource(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
	if (*Policy)(nil).BindsSource(netip.MustParseAddr("10.1.2.3")) {
		t.Error("a nil policy binds a source")
	}
}
