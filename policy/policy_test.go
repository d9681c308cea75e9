package policy

import (
	"context"
	"crypto/x509"
	"errors"
	"net/netip"
	"testing"
	"time"
)

type fakeIdentity struct{}

func (fakeIdentity) Verify(_ context.Context, id *Credential) (string, []byte, error) {
	if string(id.Primary) == "alice" && string(id.Secondary) == "right" {
		return "alice", nil, nil
	}
	return "", nil, errors.New("bad credentials")
}

func rq(calling string) Request {
	return Request{CallingAETitle: calling}
}

func TestAdmit(t *testing.T) {
	cert := &x509.Certificate{Raw: []byte("client certificate")}
	other := &x509.Certificate{Raw: []byte("another certificate")}
	c := defaultRules()
	c.Peers = []Peer{
		{AETitle: "MODALITY", Host: "127.0.0.1", Allow: perms("echo", "store")},
		{AETitle: "WORKSTATION", Networks: nets("10.1.0.0/16"), Allow: perms("echo", "find", "move"), MaxResults: 50},
		{AETitle: "PINNED", CertFingerprint: Fingerprint(cert), Allow: perms("echo", "get")},
		{AETitle: "NAMED", RequireIdentity: true, Host: "127.0.0.1", Allow: perms("echo")},
		{AETitle: "UNBOUND", Allow: perms("echo")},
		{AETitle: "TLSONLY", Host: "127.0.0.1", RequireTLS: true, Allow: perms("echo")},
	}
	lo := netip.MustParseAddr("127.0.0.1")
	lan := netip.MustParseAddr("10.1.2.3")
	plainLo := Conn{Remote: lo, LoopbackListener: true}
	for _, anyAE := range []bool{false, true} {
		c.LoopbackAnyAE = anyAE
		p, err := New(c, fakeIdentity{})
		if err != nil {
			t.Fatal(err)
		}
		withID := func(calling, user, pass string) Request {
			r := rq(calling)
			r.Credential = &Credential{Type: 2, Primary: []byte(user), Secondary: []byte(pass), PositiveResponse: true}
			return r
		}
		for _, tc := range []struct {
			name   string
			rq     Request
			conn   Conn
			reason RefusalKind // 0: admitted
			allow  Permission
		}{
			{"registered peer from its host", rq("MODALITY"), plainLo, 0, Store},
			{"registered peer from another source", rq("MODALITY"), Conn{Remote: netip.MustParseAddr("127.0.0.9"), LoopbackListener: true}, RefusedCaller, ""},
			{"unknown calling AE", rq("NOBODY"), plainLo, map[bool]RefusalKind{false: RefusedCaller, true: 0}[anyAE], Find},
			{"unknown calling AE over TLS", rq("NOBODY"), Conn{Remote: lo, TLS: true, LoopbackListener: true}, RefusedCaller, ""},
			{"peer bound to a network, inside", rq("WORKSTATION"), Conn{Remote: lan, TLS: true}, 0, Move},
			{"peer bound to a network, outside", rq("WORKSTATION"), Conn{Remote: netip.MustParseAddr("10.2.0.1"), TLS: true}, RefusedCaller, ""},
			{"pinned peer, right certificate", rq("PINNED"), Conn{Remote: lan, TLS: true, Cert: cert}, 0, Get},
			{"pinned peer, other certificate", rq("PINNED"), Conn{Remote: lan, TLS: true, Cert: other}, RefusedCaller, ""},
			{"pinned peer, no certificate", rq("PINNED"), Conn{Remote: lan, TLS: true}, RefusedCaller, ""},
			{"pinned peer, plain", rq("PINNED"), plainLo, RefusedCaller, ""},
			{"TLS-only peer, plain", rq("TLSONLY"), plainLo, RefusedCaller, ""},
			{"TLS-only peer, TLS", rq("TLSONLY"), Conn{Remote: lo, TLS: true, LoopbackListener: true}, 0, Echo},
			{"unbound peer", rq("UNBOUND"), plainLo, RefusedCaller, ""},
			{"identity required, none", rq("NAMED"), plainLo, RefusedNoReason, ""},
			{"identity required, wrong passcode", withID("NAMED", "alice", "wrong"), plainLo, RefusedNoReason, ""},
			{"identity required, right passcode", withID("NAMED", "alice", "right"), plainLo, 0, Echo},
			{"identity not required but wrong", withID("MODALITY", "alice", "wrong"), plainLo, RefusedNoReason, ""},
			{"plain from outside the acknowledged networks", rq("WORKSTATION"), Conn{Remote: lan}, RefusedNoReason, ""},
		} {
			g, r := p.Admit(t.Context(), tc.rq, tc.conn)
			switch {
			case tc.reason == 0 && r != nil:
				t.Errorf("anyAE=%v %s: refused: %s", anyAE, tc.name, r.Reason)
			case tc.reason != 0 && r == nil:
				t.Errorf("anyAE=%v %s: admitted, want reason %d", anyAE, tc.name, tc.reason)
			case r != nil && (r.Kind != tc.reason || r.Transient() || !r.Alert):
				t.Errorf("anyAE=%v %s: refusal kind %d alert=%v (%s), want kind %d with an alert", anyAE, tc.name, r.Kind, r.Alert, r.Reason, tc.reason)
			case g != nil && !g.Has(tc.allow):
				t.Errorf("anyAE=%v %s: grant %v lacks %s", anyAE, tc.name, g.Permissions(), tc.allow)
			}
			if r != nil {
				t.Logf("%s: %s", tc.name, r.Reason)
			}
		}
	}
	// Grants carry what the peer may do, nothing more.
	p, _ := New(c, nil)
	g, _ := p.Admit(t.Context(), rq("WORKSTATION"), Conn{Remote: lan, TLS: true})
	if g.Has(Store) || g.Has(Get) || g.Has(BulkQuery) || g.MaxResults != 50 {
		t.Errorf("WORKSTATION grant: %v max %d", g.Permissions(), g.MaxResults)
	}
	if !g.AllowsContext(Find, false) || g.AllowsContext(Store, false) || g.AllowsContext(Store, true) {
		t.Error("WORKSTATION contexts")
	}
	g, _ = p.Admit(t.Context(), rq("PINNED"), Conn{Remote: lan, TLS: true, Cert: cert})
	if !g.AllowsContext(Store, true) || g.AllowsContext(Store, false) || g.StoreRole() {
		t.Error("PINNED (get) may take storage contexts in the SCP role only, and may not store")
	}
	// Without a verifier, a presented identity is refused.
	r := rq("MODALITY")
	r.Credential = &Credential{Type: 2, Primary: []byte("alice"), Secondary: []byte("right")}
	if _, rf := p.Admit(t.Context(), r, plainLo); rf == nil {
		t.Error("identity admitted without a verifier")
	}
}

func TestPlaintextNetworks(t *testing.T) {
	c := defaultRules()
	c.PlaintextNetworks = nets("10.1.0.0/16")
	c.Peers = []Peer{{AETitle: "CT", Networks: nets("10.0.0.0/8"), Allow: perms("store")}}
	p, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, r := p.Admit(t.Context(), rq("CT"), Conn{Remote: netip.MustParseAddr("10.1.9.9")}); r != nil {
		t.Errorf("inside the acknowledged network: %s", r.Reason)
	}
	if _, r := p.Admit(t.Context(), rq("CT"), Conn{Remote: netip.MustParseAddr("10.2.9.9")}); r == nil {
		t.Error("plain from outside the acknowledged networks admitted")
	}
	if _, r := p.Admit(t.Context(), rq("CT"), Conn{Remote: netip.MustParseAddr("10.2.9.9"), TLS: true}); r != nil {
		t.Errorf("TLS is not restricted to the plaintext networks: %s", r.Reason)
	}
}

func TestLimiterLockout(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := &Limiter{After: 3, Base: time.Second, Max: 8 * time.Second, Now: func() time.Time { return now }}
	a := netip.MustParseAddr("192.0.2.7")
	for i := 1; i <= 2; i++ {
		if !l.FailedAs(a, "CT\x00").IsZero() {
			t.Fatalf("locked after %d failures", i)
		}
	}
	wants := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for _, want := range wants {
		until := l.FailedAs(a, "CT\x00")
		if got := until.Sub(now); got != want {
			t.Fatalf("lockout %v, want %v", got, want)
		}
		if _, locked := l.Locked(a); !locked {
			t.Fatal("not locked")
		}
	}
	now = now.Add(9 * time.Second)
	if _, locked := l.Locked(a); locked {
		t.Fatal("still locked after the back-off")
	}
	l.Succeeded(a, "CT\x00")
	if !l.Failed(a).IsZero() {
		t.Fatal("a success did not reset the count")
	}
	// Bounded memory: many sources never grow the table past maxTracked.
	for i := range maxTracked + 1000 {
		l.Failed(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := len(l.fails); n > maxTracked {
		t.Fatalf("%d sources tracked", n)
	}
	// Per-peer association slots.
	if !l.Acquire("CT", 2) || !l.Acquire("CT", 2) || l.Acquire("CT", 2) {
		t.Fatal("slots")
	}
	l.Release("CT")
	if !l.Acquire("CT", 2) {
		t.Fatal("slot not given back")
	}
}

// A peer bound to a host name follows the name's addresses: a call from an
// address the last lookup did not give looks the name up again, at most
// once per HostRefresh, and a name that did not resolve at start may
// resolve later.
func TestHostNameBinding(t *testing.T) {
	dns := map[string][]string{"ct1.example": {"10.1.2.3"}}
	lookups := 0
	oldLookup, oldRefresh := LookupHost, HostRefresh
	t.Cleanup(func() { LookupHost, HostRefresh = oldLookup, oldRefresh })
	LookupHost = func(host string) ([]string, error) {
		lookups++
		if a, ok := dns[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}
	HostRefresh = time.Hour
	c := defaultRules()
	c.PlaintextNetworks = nets("10.0.0.0/8")
	c.Peers = []Peer{
		{AETitle: "CT1", Host: "ct1.example", Allow: perms("echo")},
		{AETitle: "MR1", Host: "mr1.example", Allow: perms("echo")},
	}
	p, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	from := func(a string) Conn { return Conn{Remote: netip.MustParseAddr(a)} }
	admit := func(calling, addr string) *Refusal {
		_, r := p.Admit(t.Context(), rq(calling), from(addr))
		return r
	}
	if r := admit("CT1", "10.1.2.3"); r != nil {
		t.Fatalf("CT1 from its address: %s", r.Reason)
	}
	// The workstation moves. Within HostRefresh of the last lookup the
	// old answer stands, and no lookup is made.
	dns["ct1.example"] = []string{"10.1.2.4"}
	n := lookups
	if r := admit("CT1", "10.1.2.4"); r == nil || r.Kind != RefusedCaller {
		t.Fatalf("CT1 from its new address before the refresh: %+v", r)
	}
	if lookups != n {
		t.Errorf("%d lookups within HostRefresh", lookups-n)
	}
	// Once the answer is old, the call from the new address is looked up
	// and admitted; the old address no longer is.
	HostRefresh = 0
	if r := admit("CT1", "10.1.2.4"); r != nil {
		t.Fatalf("CT1 from its new address after the refresh: %s", r.Reason)
	}
	if r := admit("CT1", "10.1.2.3"); r == nil {
		t.Fatal("CT1 admitted from its old address")
	} else {
		t.Log(r.Reason)
	}
	// A calling address the name gives needs no lookup.
	n = lookups
	if r := admit("CT1", "10.1.2.4"); r != nil || lookups != n {
		t.Errorf("CT1 again: %v, %d lookups", r, lookups-n)
	}
	// A name that did not resolve at start is refused with the reason,
	// then admitted once it resolves.
	r := admit("MR1", "10.1.5.6")
	if r == nil || r.Kind != RefusedCaller {
		t.Fatalf("MR1 without DNS: %+v", r)
	}
	t.Log(r.Reason)
	dns["mr1.example"] = []string{"10.1.5.6"}
	if r := admit("MR1", "10.1.5.6"); r != nil {
		t.Fatalf("MR1 once it resolves: %s", r.Reason)
	}
}

// defaultRules are the rules of an empty configuration's [dicom] and
// [query] (internal/config's defaults).
func defaultRules() Rules {
	return Rules{MaxAssociationsPerPeer: 16, MaxResults: 1000}
}

func nets(cidrs ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range cidrs {
		out = append(out, netip.MustParsePrefix(c))
	}
	return out
}

func perms(names ...Permission) []Permission { return names }
