package config

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Services a peer may be allowed (Peer.Allow). Recording them is this
// issue's work; enforcing them per association is the security issue's,
// except that a C-MOVE destination must be a registered peer with an
// address.
var Services = []string{"echo", "store", "find", "move", "get"}

// Peer is a registered DICOM peer: its AE title, where Ward reaches it (a
// C-MOVE destination needs Host and Port) and the services it may use.
type Peer struct {
	AETitle string   `toml:"aet"`
	Host    string   `toml:"host,omitempty"`
	Port    int      `toml:"port,omitzero"`
	Allow   []string `toml:"allow,omitempty"`
}

// CheckAETitle checks an AE title: 1 to 16 printable ASCII characters
// without leading or trailing spaces or backslash.
func CheckAETitle(ae string) error {
	if ae == "" || len(ae) > 16 || strings.TrimSpace(ae) != ae || strings.Contains(ae, `\`) {
		return fmt.Errorf("aet %q: an AE title is 1 to 16 characters, without leading or trailing spaces or backslash", ae)
	}
	for _, r := range ae {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("aet %q: only printable ASCII characters are allowed", ae)
		}
	}
	return nil
}

// Validate checks one peer.
func (p *Peer) Validate() error {
	if err := CheckAETitle(p.AETitle); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if p.Port < 0 || p.Port > 65535 {
		return fmt.Errorf("peer %s: port %d out of range", p.AETitle, p.Port)
	}
	if (p.Host == "") != (p.Port == 0) {
		return fmt.Errorf("peer %s: give both host and port, or neither", p.AETitle)
	}
	if strings.ContainsAny(p.Host, " /") {
		return fmt.Errorf("peer %s: host %q is not a host name or address", p.AETitle, p.Host)
	}
	for _, s := range p.Allow {
		if !slices.Contains(Services, s) {
			return fmt.Errorf("peer %s: unknown service %q in allow (use %s)", p.AETitle, s, strings.Join(Services, ","))
		}
	}
	return nil
}

// Addr is HOST:PORT, or "" when the peer has no address.
func (p *Peer) Addr() string {
	if p.Host == "" || p.Port == 0 {
		return ""
	}
	return net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
}

// Allows reports whether the peer may use service.
func (p *Peer) Allows(service string) bool { return slices.Contains(p.Allow, service) }

// Peer returns the registered peer with AE title aet.
func (c *Config) Peer(aet string) (Peer, bool) {
	aet = strings.TrimSpace(aet)
	for _, p := range c.Peers {
		if p.AETitle == aet {
			return p, true
		}
	}
	return Peer{}, false
}
