package config

import (
	"fmt"
	"net/netip"

	"github.com/ward-pacs/ward/policy"
	"github.com/ward-pacs/ward/policy/identity"
)

// Policy translates the configuration into the rules policy applies
// ([[peers]], [dicom]'s admission, limits and lockout, and [query]) and the settings identity verifies
// users by ([[users]] and [identity]). It is the one place where the TOML
// schema meets policy's types. It validates the users first (as Validate
// does) and fails on anything policy could not apply: a network that is
// not a CIDR, a fingerprint that is not a SHA-256, a permission policy
// does not know.
func (c *Config) Policy() (policy.Rules, identity.Settings, error) {
	if err := c.ValidateUsers(); err != nil {
		return policy.Rules{}, identity.Settings{}, err
	}
	r := policy.Rules{
		LoopbackAnyAE:          c.DICOM.LoopbackAnyAE,
		MaxAssociationsPerPeer: c.DICOM.MaxAssociationsPerPeer,
		MaxResults:             c.Query.MaxResults,
		Lockout: policy.LockoutRule{
			After: c.DICOM.LockoutAfter,
			Base:  c.DICOM.LockoutBase.Duration,
			Max:   c.DICOM.LockoutMax.Duration,
		},
	}
	if r.Lockout.After == 0 {
		r.Lockout.After = DefaultLockoutAfter
	}
	for _, n := range c.DICOM.PlaintextNetworks {
		pf, err := netip.ParsePrefix(n)
		if err != nil {
			return policy.Rules{}, identity.Settings{}, fmt.Errorf("dicom plaintext_networks: %q is not a CIDR", n)
		}
		r.PlaintextNetworks = append(r.PlaintextNetworks, pf)
	}
	for _, p := range c.Peers {
		pp := policy.Peer{
			AETitle:         p.AETitle,
			Host:            p.Host,
			RequireTLS:      p.RequireTLS,
			RequireIdentity: p.RequireIdentity,
			MaxAssociations: p.MaxAssociations,
			MaxResults:      p.MaxResults,
			Deidentify:      p.Deidentify,
		}
		for _, s := range p.Allow {
			perm, ok := permission(s)
			if !ok {
				return policy.Rules{}, identity.Settings{}, fmt.Errorf("peer %s: unknown service %q in allow", p.AETitle, s)
			}
			pp.Allow = append(pp.Allow, perm)
		}
		for _, n := range p.Networks {
			pf, err := netip.ParsePrefix(n)
			if err != nil {
				return policy.Rules{}, identity.Settings{}, fmt.Errorf("peer %s: network %q is not a CIDR", p.AETitle, n)
			}
			pp.Networks = append(pp.Networks, pf)
		}
		if p.CertFingerprint != "" {
			fp, err := ParseFingerprint(p.CertFingerprint)
			if err != nil {
				return policy.Rules{}, identity.Settings{}, fmt.Errorf("peer %s: %w", p.AETitle, err)
			}
			pp.CertFingerprint = fp
		}
		r.Peers = append(r.Peers, pp)
	}
	s := identity.Settings{
		JWKS:        c.Identity.JWKS,
		JWTIssuer:   c.Identity.JWTIssuer,
		JWTAudience: c.Identity.JWTAudience,
		ClockSkew:   c.Identity.ClockSkewOrDefault(),
	}
	for _, u := range c.Users {
		s.Users = append(s.Users, identity.User{Name: u.Name, Hash: u.Hash})
		roles, err := ParseRoles(u.Roles)
		if err != nil {
			return policy.Rules{}, identity.Settings{}, fmt.Errorf("user %s: %w", u.Name, err)
		}
		if len(roles) > 0 {
			if r.Roles == nil {
				r.Roles = map[string][]policy.Role{}
			}
			r.Roles[u.Name] = roles
		}
	}
	return r, s, nil
}

// permission is the policy permission a service in a peer's allow names.
func permission(s string) (policy.Permission, bool) {
	for _, p := range policy.Permissions {
		if string(p) == s {
			return p, true
		}
	}
	return "", false
}
