package config

import (
	"strings"
	"testing"
)

func TestPeerDestination(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Peer
		addr string
		why  string
	}{
		{"destination", Peer{AETitle: "WS", Host: "10.1.2.3", Port: 104, Allow: []string{"find", MoveDestination}}, "10.1.2.3:104", ""},
		{"IPv6", Peer{AETitle: "WS", Host: "::1", Port: 104, Allow: []string{MoveDestination}}, "[::1]:104", ""},
		{"address without the permission", Peer{AETitle: "CT", Host: "10.1.2.3", Port: 104, Allow: []string{"echo", "store", "move"}}, "", "no move-destination permission"},
		{"permission without a port", Peer{AETitle: "WS", Host: "10.1.2.3", Allow: []string{MoveDestination}}, "", "no host and port"},
		{"permission without an address", Peer{AETitle: "WS", Networks: []string{"10.1.2.3/32"}, Allow: []string{MoveDestination}}, "", "no host and port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); err != nil {
				t.Fatal(err)
			}
			addr, err := tc.p.Destination()
			if addr != tc.addr || (err == nil) != (tc.why == "") || (err != nil && !strings.Contains(err.Error(), tc.why)) {
				t.Fatalf("Destination() = %q, %v; want %q, %q", addr, err, tc.addr, tc.why)
			}
		})
	}
}

func TestMinFreeBytes(t *testing.T) {
	for _, tc := range []struct {
		in    string
		n     int64
		share float64
		bad   bool
	}{
		{"", DefaultMinFree, DefaultMinFreeShare, false},
		{"0", 0, 0, false},
		{"2GiB", 2 << 30, 0, false},
		{"500MB", 500e6, 0, false},
		{"600KiB", 600 << 10, 0, false},
		{"12345", 12345, 0, false},
		{"lots", 0, 0, true},
		{"-1GiB", 0, 0, true},
	} {
		s := Storage{MinFree: tc.in}
		n, share, err := s.MinFreeBytes()
		if (err != nil) != tc.bad || n != tc.n || share != tc.share {
			t.Errorf("%q: %d %v %v", tc.in, n, share, err)
		}
	}
	c := Default()
	c.Storage.MinFree = "lots"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "min_free") {
		t.Errorf("Validate with a bad min_free: %v", err)
	}
}
