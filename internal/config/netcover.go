package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
)

// The checks on network lists ([dicom] plaintext_networks, a peer's
// networks) judge the union of the list, not each entry alone: two /1
// halves are every address as surely as one /0.
//
// CIDR prefixes either nest or are disjoint, so the union is the set of
// prefixes no other entry contains, and its size is the sum of theirs.
// Sizes are fractions of the family's address space (a /n is 2^-n), exact
// in a float64 for any prefix length.

// Public address space a list may cover before `ward serve` refuses it: a
// /8's worth of IPv4 (16.7 million addresses) and a /32's worth of IPv6
// (what a registry allocates to a whole provider; a site gets a /48).
var (
	maxPublic4 = math.Ldexp(1, -8)
	maxPublic6 = math.Ldexp(1, -32)
)

// nonPublic are the ranges that are not on the public internet: private
// (RFC 1918), loopback, link-local, and IPv6 unique local (RFC 4193). They
// are disjoint.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// netCover is the union of a list of networks, per family.
type netCover struct {
	// all and public are the fractions of the IPv4 ([0]) and IPv6 ([1])
	// address spaces the union covers, in all and of public addresses.
	all, public [2]float64
	// publicNets are the entries (as written) that hold public addresses.
	publicNets []string
}

// canonical is p masked, with an IPv4-mapped IPv6 prefix (::ffff:a.b.c.d/n,
// n ≥ 96) taken as the IPv4 prefix it maps, and a wider IPv6 prefix that
// holds the mapped range taken as all of IPv4 besides: a list is judged by
// its widest reading.
func canonical(p netip.Prefix) []netip.Prefix {
	p = p.Masked()
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return []netip.Prefix{netip.PrefixFrom(a.Unmap(), p.Bits()-96)}
	}
	if a.Is6() && p.Contains(netip.MustParseAddr("::ffff:0.0.0.0")) && p.Bits() < 96 {
		return []netip.Prefix{p, netip.MustParsePrefix("0.0.0.0/0")}
	}
	return []netip.Prefix{p}
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1
}

// size is the fraction of its family's space p covers.
func size(p netip.Prefix) float64 { return math.Ldexp(1, -p.Bits()) }

// publicSize is the fraction of its family's space that p covers outside
// the non-public ranges.
func publicSize(p netip.Prefix) float64 {
	s := size(p)
	for _, r := range nonPublic {
		switch {
		case family(r) != family(p) || !r.Overlaps(p):
		case r.Bits() <= p.Bits(): // r holds p
			return 0
		default: // p holds r
			s -= size(r)
		}
	}
	return s
}

// coverOf judges the union of nets; entries that are not CIDRs are
// skipped (Validate reports them).
func coverOf(nets []string) netCover {
	var ps []netip.Prefix
	var c netCover
	for _, n := range nets {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			continue
		}
		public := false
		for _, q := range canonical(p) {
			ps = append(ps, q)
			public = public || publicSize(q) > 0
		}
		if public {
			c.publicNets = append(c.publicNets, n)
		}
	}
	// Widest first, so an entry is dropped when one kept before holds it.
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() })
	var kept []netip.Prefix
	for _, p := range ps {
		if slices.ContainsFunc(kept, func(k netip.Prefix) bool { return k.Overlaps(p) }) {
			continue
		}
		kept = append(kept, p)
		c.all[family(p)] += size(p)
		c.public[family(p)] += publicSize(p)
	}
	return c
}

// every reports whether the union is a whole address family.
func (c netCover) every() bool { return c.all[0] >= 1 || c.all[1] >= 1 }

// tooWide reports whether the union covers more public space than a site
// has any need for (maxPublic4, maxPublic6).
func (c netCover) tooWide() bool { return c.public[0] >= maxPublic4 || c.public[1] >= maxPublic6 }

// describe says how much the union covers, for a finding.
func (c netCover) describe() string {
	var out string
	for f, name := range []string{"IPv4", "IPv6"} {
		if c.all[f] == 0 {
			continue
		}
		if out != "" {
			out += ", "
		}
		out += fmt.Sprintf("%s of %s (%s of it public)", percent(c.all[f]), name, percent(c.public[f]))
	}
	return out
}

func percent(f float64) string {
	switch {
	case f >= 1:
		return "all"
	case f >= 0.001:
		return fmt.Sprintf("%.1f%%", f*100)
	case f == 0:
		return "none"
	}
	return fmt.Sprintf("%.2g%%", f*100)
}
