package config

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// The load balancers a node reads the PROXY protocol from ([dicom]
// proxy_from, [web] proxy_from). A listed balancer may claim any client
// address, so each list should name the balancers' own addresses: every
// host a list covers can make its connections look like any client's,
// bound peers included.

// ParseProxyFrom parses a proxy_from list: host addresses ("10.0.0.5",
// "::1") and CIDRs ("10.0.0.4/30"). IPv4-mapped IPv6 entries are taken as
// the IPv4 they map.
func ParseProxyFrom(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range list {
		e = strings.TrimSpace(e)
		if a, err := netip.ParseAddr(e); err == nil {
			if a.Zone() != "" {
				return nil, fmt.Errorf("%q: give the address without a zone", e)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR (e.g. 10.0.0.5 or 10.0.0.4/30)", e)
		}
		for _, q := range canonical(p) {
			if q.Addr().Is4In6() {
				continue // the mapped range, given again as IPv4 by canonical
			}
			out = append(out, q)
		}
	}
	return out, nil
}

func (c *Config) validateProxyFrom() error {
	if _, err := ParseProxyFrom(c.DICOM.ProxyFrom); err != nil {
		return fmt.Errorf("dicom proxy_from: %w", err)
	}
	if _, err := ParseProxyFrom(c.Web.ProxyFrom); err != nil {
		return fmt.Errorf("web proxy_from: %w", err)
	}
	return nil
}

// Balancers are hosts: a list that covers more than a /24 of IPv4 or a
// /120 of IPv6 names networks, not balancers.
var (
	maxProxyHosts4 = math.Ldexp(1, -24)
	maxProxyHosts6 = math.Ldexp(1, -120)
)

// checkProxyFrom judges the proxy_from lists: one that covers every
// address or a large part of the internet is refused (anyone there could
// claim to be any client, a bound peer included); one wider than a few
// hosts is high.
func (c *Config) checkProxyFrom(add func(sev Severity, refuse bool, setting, problem, fix string)) {
	for _, l := range []struct {
		section string
		list    []string
	}{{"dicom", c.DICOM.ProxyFrom}, {"web", c.Web.ProxyFrom}} {
		if len(l.list) == 0 {
			continue
		}
		setting := "[" + l.section + "] proxy_from = " + strings.Join(l.list, ",")
		if _, err := ParseProxyFrom(l.list); err != nil {
			add(Critical, true, setting, err.Error(), "list the load balancers' addresses (e.g. 10.0.0.5) or a small CIDR")
			continue
		}
		nets := coverOf(hostsAsCIDRs(l.list))
		fix := "list only the load balancers' own addresses"
		switch {
		case nets.every():
			add(Critical, true, setting, "every address may send a PROXY header (together the entries cover "+nets.describe()+"): any client can claim any source address, a bound peer's included, and escape the per-source lockout", fix)
		case nets.tooWide():
			add(Critical, true, setting, "a large part of the internet may send a PROXY header (together the entries cover "+nets.describe()+"): those hosts can claim any source address, a bound peer's included", fix)
		case nets.all[0] > maxProxyHosts4 || nets.all[1] > maxProxyHosts6:
			add(High, false, setting, "more than a few hosts may send a PROXY header (together the entries cover "+nets.describe()+"): each of them can claim any source address, a bound peer's included", fix)
		}
	}
}

// hostsAsCIDRs writes the addresses of a proxy_from list as CIDRs
// (coverOf takes CIDRs).
func hostsAsCIDRs(list []string) []string {
	out := make([]string, 0, len(list))
	for _, e := range list {
		if a, err := netip.ParseAddr(strings.TrimSpace(e)); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
			continue
		}
		out = append(out, strings.TrimSpace(e))
	}
	return out
}
