package policy

import "net/netip"

// BindsSource reports whether a registered peer is bound to source
// address a: a peer bound to a network that contains a, or to a host
// whose last resolution gave a. It never resolves a name (it is asked as
// each connection is accepted, before anything is read). A peer pinned
// only by certificate fingerprint binds no source: before the TLS
// handshake nothing tells it from a stranger.
func (p *Policy) BindsSource(a netip.Addr) bool {
	if p == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, r := range p.peers {
		if r.unbound != "" {
			continue
		}
		if inNets(a, r.nets) {
			return true
		}
		if r.host != nil {
			if l := r.host.last.Load(); l != nil && inNets(a, l.nets) {
				return true
			}
		}
	}
	return false
}
