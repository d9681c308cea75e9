package config

import (
	"fmt"
	"github.com/ward-pacs/ward/dicom/deid"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/policy"
)

// Services a peer may be allowed (Peer.Allow), enforced per association
// by the policy package: a context for a service the peer may not use is
// rejected at negotiation. bulk-query lets a peer's C-FIND list the whole
// archive (archive.JudgeQuery says which queries can).
// move-destination is not a service the peer uses but one it receives:
// C-MOVE may send it images (at Host and Port).
// They are policy's permissions, by name: one list.
var Services = func() []string {
	out := make([]string, len(policy.Permissions))
	for i, p := range policy.Permissions {
		out[i] = string(p)
	}
	return out
}()

// MoveDestination is the permission to be sent images by C-MOVE.
const MoveDestination = string(policy.MoveDestination)

// Peer is a registered DICOM peer: its AE title, where Ward reaches it (a
// C-MOVE destination needs Host and Port) and the services it may use.
type Peer struct {
	AETitle string   `toml:"aet"`
	Host    string   `toml:"host,omitempty"`
	Port    int      `toml:"port,omitzero"`
	Allow   []string `toml:"allow,omitempty"`
	// Networks are the source networks (CIDRs) the peer may call from.
	// Without them (and without a certificate fingerprint) the peer is
	// bound to Host's address.
	Networks []string `toml:"networks,omitempty"`
	// CertFingerprint pins the peer's TLS client certificate: the SHA-256
	// of its DER encoding, hex (colons allowed). A pinned peer may only
	// call over TLS.
	CertFingerprint string `toml:"cert_fingerprint,omitempty"`
	// RequireTLS refuses the peer on the plain listener.
	RequireTLS bool `toml:"require_tls,omitempty"`
	// RequireIdentity refuses an association without a verified user
	// identity (username + passcode, or JWT).
	RequireIdentity bool `toml:"require_identity,omitempty"`
	// MaxAssociations overrides [dicom] max_associations_per_peer.
	MaxAssociations int `toml:"max_associations,omitzero"`
	// MaxResults overrides [query] max_results for this peer's C-FINDs.
	MaxResults int `toml:"max_results,omitzero"`
	// TLS: Ward reaches the peer (as a C-MOVE destination) over TLS,
	// verifying its server certificate against [dicom] tls_peer_ca and
	// presenting [dicom] tls_client_cert when set.
	TLS bool `toml:"tls,omitempty"`
	// Deidentify names a de-identification profile (basic[,OPTION...],
	// docs/deidentification.md): every object this peer retrieves with
	// C-GET, or has sent anywhere with C-MOVE, is de-identified on the
	// way out, and its queries are refused.
	Deidentify string `toml:"deidentify,omitempty"`
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
	if p.Deidentify != "" {
		if _, err := deid.ParseProfile(p.Deidentify); err != nil {
			return fmt.Errorf("peer %s: deidentify: %w", p.AETitle, err)
		}
	}
	if p.Port < 0 || p.Port > 65535 {
		return fmt.Errorf("peer %s: port %d out of range", p.AETitle, p.Port)
	}
	if p.Host == "" && p.Port != 0 {
		return fmt.Errorf("peer %s: a port needs a host", p.AETitle)
	}
	if strings.ContainsAny(p.Host, " /") {
		return fmt.Errorf("peer %s: host %q is not a host name or address", p.AETitle, p.Host)
	}
	for _, s := range p.Allow {
		if !slices.Contains(Services, s) {
			return fmt.Errorf("peer %s: unknown service %q in allow (use %s)", p.AETitle, s, strings.Join(Services, ","))
		}
	}
	for _, n := range p.Networks {
		if _, err := netip.ParsePrefix(n); err != nil {
			return fmt.Errorf("peer %s: network %q is not a CIDR (e.g. 10.1.2.0/24 or 10.1.2.3/32)", p.AETitle, n)
		}
	}
	if p.CertFingerprint != "" {
		if _, err := ParseFingerprint(p.CertFingerprint); err != nil {
			return fmt.Errorf("peer %s: %w", p.AETitle, err)
		}
	}
	if p.MaxAssociations < 0 {
		return fmt.Errorf("peer %s: max_associations must not be negative", p.AETitle)
	}
	return nil
}

// ParseFingerprint parses a SHA-256 certificate fingerprint written as 64
// hex digits, with or without colons, and returns it as lower-case hex
// without colons.
func ParseFingerprint(s string) (string, error) { return policy.ParseFingerprint(s) }

// Addr is HOST:PORT, or "" when the peer has no address.
func (p *Peer) Addr() string {
	if p.Host == "" || p.Port == 0 {
		return ""
	}
	return net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
}

// Allows reports whether the peer may use service.
func (p *Peer) Allows(service string) bool { return slices.Contains(p.Allow, service) }

// Destination is the peer's address as a C-MOVE destination, or why it is
// not one: it needs the move-destination permission, a host and a port.
func (p *Peer) Destination() (string, error) {
	switch {
	case !p.Allows(MoveDestination):
		return "", fmt.Errorf("peer %s may not receive C-MOVE (no %s permission)", p.AETitle, MoveDestination)
	case p.Addr() == "":
		return "", fmt.Errorf("peer %s has no host and port to receive C-MOVE at", p.AETitle)
	}
	return p.Addr(), nil
}

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
