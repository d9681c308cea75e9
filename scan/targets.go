package scan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
)

// DefaultPorts are probed on every address given without a port: the DICOM
// ports seen on exposed archives (104, 11112, 2761 and 2762 for DICOM over
// TLS, 4242 Orthanc), Orthanc's REST port 8042 and the common web ports.
var DefaultPorts = []int{104, 11112, 2761, 2762, 4242, 8042, 80, 443, 8080}

// LargeScope is the number of addresses above which a scan needs
// Scope.AllowLarge (a /16).
const LargeScope = 1 << 16

// MaxScope is the most addresses one scan expands to, even with AllowLarge
// (a /8). Split larger scopes.
const MaxScope = 1 << 24

// ErrLargeScope: the targets expand to more than LargeScope addresses and
// AllowLarge was not set.
var ErrLargeScope = errors.New("scan: scope larger than a /16")

// Spec is one parsed target: a host name, an address or a network, with
// an optional port.
type Spec struct {
	// Raw is the target as given.
	Raw string
	// Host is a host name to resolve (empty for an address or network).
	Host string
	// Prefix is the address or network (a single address is a /32 or
	// /128); unset until Host is resolved.
	Prefix netip.Prefix
	// Port restricts the target to one port; 0 means the scan's ports.
	Port int
}

// ParseSpec parses a host, HOST:PORT, [IPv6]:PORT, an IPv4 or IPv6
// address or a CIDR.
func ParseSpec(s string) (Spec, error) {
	raw := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Spec{}, errors.New("scan: empty target")
	}
	sp := Spec{Raw: raw}
	if p, err := netip.ParsePrefix(s); err == nil {
		sp.Prefix = p.Masked()
		return sp, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		sp.Prefix = netip.PrefixFrom(a.WithZone(""), a.BitLen())
		return sp, nil
	}
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		port, err := strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return Spec{}, fmt.Errorf("scan: target %q: bad port %q", raw, p)
		}
		sp.Port, host = port, h
		if pr, err := netip.ParsePrefix(host); err == nil {
			sp.Prefix = pr.Masked()
			return sp, nil
		}
		if a, err := netip.ParseAddr(host); err == nil {
			sp.Prefix = netip.PrefixFrom(a.WithZone(""), a.BitLen())
			return sp, nil
		}
	}
	if !validHostname(host) {
		return Spec{}, fmt.Errorf("scan: target %q: not a host, address or network", raw)
	}
	sp.Host = host
	return sp, nil
}

func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r == '-' || r == '.' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// ReadSpecs reads targets from r, one or more per line (separated by
// spaces or commas); '#' starts a comment.
func ReadSpecs(r io.Reader) ([]Spec, error) {
	var out []Spec
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	n := 0
	for sc.Scan() {
		n++
		line, _, _ := strings.Cut(sc.Text(), "#")
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
			sp, err := ParseSpec(f)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			out = append(out, sp)
		}
	}
	return out, sc.Err()
}

// ReadSpecsFile reads a targets file (see ReadSpecs).
func ReadSpecsFile(path string) ([]Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	specs, err := ReadSpecs(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return specs, nil
}

// ParsePorts parses "104,11112,8000-8010".
func ParsePorts(s string) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
			return nil, fmt.Errorf("scan: bad port or range %q", f)
		}
		for p := a; p <= b; p++ {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("scan: no ports")
	}
	return out, nil
}

// Scope is what a scan may touch: targets, exclusions and ports. Nothing
// outside it is ever sent to.
type Scope struct {
	Targets    []Spec
	Exclude    []Spec
	Ports      []int // DefaultPorts when empty
	AllowLarge bool
}

// Endpoint is one address and port to probe.
type Endpoint struct {
	// Name is the host name the address came from, if any.
	Name string
	Addr netip.Addr
	Port int
}

func (e Endpoint) String() string { return netip.AddrPortFrom(e.Addr, uint16(e.Port)).String() }

// Resolver looks host names up (net.DefaultResolver satisfies it).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// plan is a resolved scope.
type plan struct {
	targets []Spec // Host resolved into one spec per address
	exclude []netip.Prefix
	ports   []int
	addrs   uint64 // addresses before exclusion
}

func resolve(ctx context.Context, r Resolver, specs []Spec) ([]Spec, error) {
	var out []Spec
	for _, sp := range specs {
		if sp.Host == "" {
			out = append(out, sp)
			continue
		}
		addrs, err := r.LookupNetIP(ctx, "ip", sp.Host)
		if err != nil {
			return nil, fmt.Errorf("scan: resolving %s: %w", sp.Host, err)
		}
		for _, a := range addrs {
			a = a.Unmap().WithZone("")
			out = append(out, Spec{Raw: sp.Raw, Host: sp.Host, Prefix: netip.PrefixFrom(a, a.BitLen()), Port: sp.Port})
		}
	}
	return out, nil
}

// size returns the number of addresses in p, saturated at MaxScope+1.
func size(p netip.Prefix) uint64 {
	bits := p.Addr().BitLen() - p.Bits()
	if bits > 25 {
		return MaxScope + 1
	}
	return 1 << bits
}

func makePlan(ctx context.Context, r Resolver, s Scope) (*plan, error) {
	if len(s.Targets) == 0 {
		return nil, errors.New("scan: no targets")
	}
	t, err := resolve(ctx, r, s.Targets)
	if err != nil {
		return nil, err
	}
	ex, err := resolve(ctx, r, s.Exclude)
	if err != nil {
		return nil, err
	}
	p := &plan{targets: t, ports: s.Ports}
	if len(p.ports) == 0 {
		p.ports = DefaultPorts
	}
	for _, e := range ex {
		p.exclude = append(p.exclude, e.Prefix)
	}
	for _, sp := range t {
		p.addrs += size(sp.Prefix)
		if p.addrs > MaxScope {
			return nil, fmt.Errorf("%w: more than %d addresses even with --allow-large; split the scope", ErrLargeScope, MaxScope)
		}
	}
	if p.addrs > LargeScope && !s.AllowLarge {
		return nil, fmt.Errorf("%w: %d addresses; give --allow-large to scan them", ErrLargeScope, p.addrs)
	}
	return p, nil
}

func (p *plan) excluded(a netip.Addr) bool {
	for _, e := range p.exclude {
		if e.Contains(a) {
			return true
		}
	}
	return false
}

// endpoints calls fn for each endpoint in scope order (no endpoint twice),
// stopping when fn returns false.
func (p *plan) endpoints(fn func(Endpoint) bool) {
	seen := map[netip.AddrPort]bool{}
	for _, sp := range p.targets {
		ports := p.ports
		if sp.Port != 0 {
			ports = []int{sp.Port}
		}
		a := sp.Prefix.Addr()
		for n := size(sp.Prefix); n > 0 && a.IsValid() && sp.Prefix.Contains(a); n-- {
			if !p.excluded(a) {
				for _, port := range ports {
					ap := netip.AddrPortFrom(a, uint16(port))
					if seen[ap] {
						continue
					}
					if len(seen) < 1<<20 {
						seen[ap] = true
					}
					if !fn(Endpoint{Name: sp.Host, Addr: a, Port: port}) {
						return
					}
				}
			}
			a = a.Next()
		}
	}
}

// count returns the number of endpoints in scope (an estimate, without
// exclusions and duplicates, for large scopes).
func (p *plan) count() int64 {
	var n int64
	if p.addrs > LargeScope {
		for _, sp := range p.targets {
			k := int64(len(p.ports))
			if sp.Port != 0 {
				k = 1
			}
			n += int64(size(sp.Prefix)) * k
		}
		return n
	}
	p.endpoints(func(Endpoint) bool { n++; return true })
	return n
}

// sortedUnique returns the distinct strings, sorted.
func sortedUnique(in []string) []string {
	m := map[string]bool{}
	for _, s := range in {
		m[s] = true
	}
	out := make([]string, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func parseAddr(s string) (netip.Addr, error) { return netip.ParseAddr(s) }
