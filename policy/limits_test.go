package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSourceCountResetOnlyByItsOwnSuccess: a success resets a source's
// count only when every refusal it counts was attributed to the same
// calling AE title and user (issue 14, item 4: a second peer that needs
// no identity reset the count after each guess).
func TestSourceCountResetOnlyByItsOwnSuccess(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	newL := func() *Limiter {
		return &Limiter{After: 3, Base: time.Minute, Max: 10 * time.Minute, Now: func() time.Time { return now }}
	}
	a := netip.MustParseAddr("192.0.2.7")
	for _, tc := range []struct {
		name    string
		fails   []string // keys of the refusals ("" unattributed)
		success string   // key of the success between the refusals and the last one
		locked  bool     // one more refusal of the first key locks
	}{
		{"own success resets", []string{"CT\x00", "CT\x00"}, "CT\x00", false},
		{"another peer's success does not", []string{"IDMOD\x00alice", "IDMOD\x00alice"}, "OPEN\x00", true},
		{"another user's success does not", []string{"IDMOD\x00alice", "IDMOD\x00alice"}, "IDMOD\x00mallory", true},
		{"mixed refusals are not reset", []string{"GUESS1\x00", "CT\x00"}, "CT\x00", true},
		{"unattributed refusals are not reset", []string{"", ""}, "CT\x00", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newL()
			for _, k := range tc.fails {
				l.FailedAs(a, k)
			}
			l.Succeeded(a, tc.success)
			if got := !l.FailedAs(a, tc.fails[0]).IsZero(); got != tc.locked {
				t.Fatalf("locked = %v, want %v", got, tc.locked)
			}
		})
	}
	// Refusals further apart than lockout_max are not "in a row".
	l := newL()
	l.FailedAs(a, "X\x00")
	l.FailedAs(a, "Y\x00")
	now = now.Add(11 * time.Minute)
	if !l.FailedAs(a, "Z\x00").IsZero() {
		t.Fatal("refusals 11 minutes apart locked the source")
	}
}

// TestAccountLockout: the passcode failures of one account are counted
// whatever the source and whatever else succeeds meanwhile; only the
// account's own success resets them.
func TestAccountLockout(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ctx := context.Background()
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 2, byte(i)}) }
	type step struct {
		user    string
		src     int
		outcome int // Verified, Refused, Undecided
	}
	for _, tc := range []struct {
		name   string
		steps  []step
		locked bool // alice's next attempt is refused unchecked
	}{
		{"four failures", []step{{"alice", 1, Refused}, {"alice", 1, Refused}, {"alice", 1, Refused}, {"alice", 1, Refused}}, false},
		{"five failures", []step{{"alice", 1, Refused}, {"alice", 1, Refused}, {"alice", 1, Refused}, {"alice", 1, Refused}, {"alice", 1, Refused}}, true},
		{"rotating the source", []step{{"alice", 1, Refused}, {"alice", 2, Refused}, {"alice", 3, Refused}, {"alice", 4, Refused}, {"alice", 5, Refused}}, true},
		{"another account's success between", []step{{"alice", 1, Refused}, {"alice", 2, Refused}, {"bob", 1, Verified}, {"alice", 3, Refused}, {"bob", 2, Verified}, {"alice", 4, Refused}, {"alice", 5, Refused}}, true},
		{"own success resets", []step{{"alice", 1, Refused}, {"alice", 2, Refused}, {"alice", 3, Refused}, {"alice", 4, Refused}, {"alice", 9, Verified}, {"alice", 5, Refused}}, false},
		{"undecided is not counted", []step{{"alice", 1, Refused}, {"alice", 2, Refused}, {"alice", 3, Undecided}, {"alice", 4, Refused}, {"alice", 5, Refused}}, false},
		{"unknown user names count too", []step{{"nobody", 1, Refused}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Limiter{After: 5, Base: time.Minute, Max: 10 * time.Minute, Now: func() time.Time { return now }}
			for i, s := range tc.steps {
				att, lock, err := l.Reserve(ctx, src(s.src), s.user)
				if err != nil || lock != nil {
					t.Fatalf("step %d refused: %v %+v", i, err, lock)
				}
				att.Done(s.outcome, "IDMOD\x00"+s.user)
			}
			// A fresh source, so that only the account's count can refuse.
			_, lock, err := l.Reserve(ctx, src(200), "alice")
			if err != nil {
				t.Fatal(err)
			}
			if got := lock != nil && lock.Account; got != tc.locked {
				t.Fatalf("account locked = %v (%+v), want %v", got, lock, tc.locked)
			}
		})
	}
	// The lockout doubles and, once over, lets one attempt through at a
	// time.
	l := &Limiter{After: 2, Base: time.Minute, Max: 10 * time.Minute, Now: func() time.Time { return now }}
	for i := range 2 {
		att, _, _ := l.Reserve(ctx, src(i), "alice")
		acct, _ := att.Done(Refused, "")
		if (i == 1) != !acct.IsZero() {
			t.Fatalf("failure %d: lockout %v", i, acct)
		}
	}
	now = now.Add(time.Minute)
	att, lock, _ := l.Reserve(ctx, src(7), "alice")
	if lock != nil {
		t.Fatalf("still locked after the lockout: %+v", lock)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, lock, err := l.Reserve(waitCtx, src(8), "alice"); lock != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second attempt in flight after a lockout: %+v %v", lock, err)
	}
	if acct, _ := att.Done(Refused, ""); acct.Sub(now) != 2*time.Minute {
		t.Fatalf("second lockout %v, want 2m", acct.Sub(now))
	}
	// Long names are tracked by their hash; the table stays bounded.
	long := string(make([]byte, 60000))
	att, _, _ = l.Reserve(ctx, src(9), long)
	att.Done(Refused, "")
	if _, ok := l.accounts[long]; ok {
		t.Fatal("a 60 kB user name is a map key")
	}
	for i := range maxTracked + 100 {
		att, _, _ := l.Reserve(ctx, netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), fmt.Sprint("user", i))
		att.Done(Refused, "")
	}
	if len(l.accounts) > maxTracked {
		t.Fatalf("%d accounts tracked", len(l.accounts))
	}
	if _, locked := l.accounts["alice"]; !locked {
		t.Fatal("a locked account was evicted before accounts with one failure")
	}
}

// TestParallelGuesses: guesses sent in parallel get at most lockout_after
// verdicts, however many are in flight (issue 14, item 4: 48 parallel
// guesses got 48 verdicts); those beyond wait for the first verdicts and
// are then refused without being checked. Right passcodes in parallel all
// get in.
func TestParallelGuesses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		user      func(i int) string
		src       func(i int) netip.Addr
		right     bool
		verdicts  int
		byAccount bool
	}{
		{"one account, one source", func(int) string { return "alice" }, func(int) netip.Addr { return netip.MustParseAddr("10.1.2.3") }, false, 5, true},
		{"one account, 48 sources", func(int) string { return "alice" }, func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 2, byte(i)}) }, false, 5, true},
		{"48 accounts, one source", func(i int) string { return fmt.Sprint("user", i) }, func(int) netip.Addr { return netip.MustParseAddr("10.1.2.3") }, false, 5, false},
		{"right passcodes", func(int) string { return "alice" }, func(int) netip.Addr { return netip.MustParseAddr("10.1.2.3") }, true, 48, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Limiter{After: 5, Base: time.Minute, Max: 10 * time.Minute}
			var verdicts, lockedOut atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 48 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					att, lock, err := l.Reserve(ctx, tc.src(i), tc.user(i))
					switch {
					case err != nil:
						t.Errorf("guess %d: %v", i, err)
					case lock != nil:
						if lock.Account != tc.byAccount {
							t.Errorf("guess %d: lockout %+v", i, lock)
						}
						lockedOut.Add(1)
					default:
						verdicts.Add(1)
						time.Sleep(time.Millisecond) // the hash
						outcome := Refused
						if tc.right {
							outcome = Verified
						}
						att.Done(outcome, "IDMOD\x00"+tc.user(i))
					}
				}()
			}
			close(start)
			wg.Wait()
			if int(verdicts.Load()) != tc.verdicts || int(verdicts.Load()+lockedOut.Load()) != 48 {
				t.Fatalf("%d verdicts, %d locked out; want %d verdicts", verdicts.Load(), lockedOut.Load(), tc.verdicts)
			}
		})
	}
}

// slowIdentity accepts alice's "right" passcode after a pause, counting
// the verifications it runs.
type slowIdentity struct{ runs atomic.Int32 }

func (s *slowIdentity) Verify(_ context.Context, id *Credential) (string, []byte, error) {
	s.runs.Add(1)
	time.Sleep(2 * time.Millisecond)
	if string(id.Primary) == "alice" && string(id.Secondary) == "right" {
		return "alice", nil, nil
	}
	return "", nil, errors.New("bad credentials")
}

// TestAdmitIdentityLockout drives the three bypasses of issue 14 item 4
// through Admit: guesses interleaved with successes of a peer that needs
// no identity, parallel guesses, and guesses from addresses rotating in
// the peer's /24. Each gets at most lockout_after verdicts, and the
// refusal that locks the account says so.
func TestAdmitIdentityLockout(t *testing.T) {
	c := defaultRules()
	c.Peers = []Peer{
		{AETitle: "IDMOD", Networks: nets("10.1.2.0/24"), Allow: perms("store"), RequireIdentity: true},
		{AETitle: "OPEN", Networks: nets("10.1.2.0/24"), Allow: perms("echo")},
	}
	guess := func(n int) Request {
		r := rq("IDMOD")
		r.Credential = &Credential{Type: UsernamePasscode, Primary: []byte("alice"), Secondary: fmt.Appendf(nil, "guess%d", n)}
		return r
	}
	setup := func() (*Policy, *Limiter, *slowIdentity) {
		id := &slowIdentity{}
		p, err := New(c, id)
		if err != nil {
			t.Fatal(err)
		}
		l := &Limiter{After: 5, Base: time.Minute, Max: 10 * time.Minute}
		return p.WithLimiter(l), l, id
	}
	src := netip.MustParseAddr("10.1.2.3")
	t.Run("a second peer's successes between", func(t *testing.T) {
		p, l, id := setup()
		var lockedAt time.Time
		for i := range 40 {
			_, r := p.Admit(t.Context(), guess(i), Conn{Remote: src, TLS: true})
			if r == nil {
				t.Fatal("a wrong passcode admitted")
			}
			if !r.AccountLocked.IsZero() {
				lockedAt = r.AccountLocked
			}
			// What the server does on an accepted association.
			open := rq("OPEN")
			if _, r := p.Admit(t.Context(), open, Conn{Remote: src, TLS: true}); r == nil {
				l.Succeeded(src, FailKey(open))
			}
		}
		if n := id.runs.Load(); n != 5 {
			t.Fatalf("%d of 40 guesses verified, want 5", n)
		}
		if lockedAt.IsZero() {
			t.Fatal("no refusal reported the account's lockout")
		}
	})
	t.Run("parallel", func(t *testing.T) {
		p, _, id := setup()
		var wg sync.WaitGroup
		for i := range 48 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, r := p.Admit(ctx, guess(i), Conn{Remote: src, TLS: true}); r == nil {
					t.Error("a wrong passcode admitted")
				}
			}()
		}
		wg.Wait()
		if n := id.runs.Load(); n != 5 {
			t.Fatalf("%d of 48 parallel guesses verified, want 5", n)
		}
	})
	t.Run("rotating the source in the /24", func(t *testing.T) {
		p, _, id := setup()
		for i := range 60 {
			_, r := p.Admit(t.Context(), guess(i), Conn{Remote: netip.AddrFrom4([4]byte{10, 1, 2, byte(i + 1)}), TLS: true})
			if r == nil {
				t.Fatal("a wrong passcode admitted")
			}
			if i >= 5 && (!r.Transient() || r.Account != "alice") {
				t.Fatalf("guess %d: %+v", i, r)
			}
		}
		if n := id.runs.Load(); n != 5 {
			t.Fatalf("%d of 60 guesses verified, want 5", n)
		}
		// The right passcode is locked out too (until the lockout ends),
		// whoever sends it: a lockout cannot tell the owner from a guesser.
		right := rq("IDMOD")
		right.Credential = &Credential{Type: UsernamePasscode, Primary: []byte("alice"), Secondary: []byte("right")}
		if _, r := p.Admit(t.Context(), right, Conn{Remote: netip.MustParseAddr("10.1.2.200"), TLS: true}); r == nil || !r.Transient() {
			t.Fatalf("the right passcode during the lockout: %+v", r)
		}
	})
}

// busyIdentity never gets a free verifier before the deadline.
type busyIdentity struct{}

func (busyIdentity) Verify(ctx context.Context, _ *Credential) (string, []byte, error) {
	<-ctx.Done()
	return "", nil, fmt.Errorf("user identity: busy: %w", ctx.Err())
}

// TestAdmitBusyIsNoVerdict: a verification that did not finish is refused
// as transient and counted against neither the account nor the source.
func TestAdmitBusyIsNoVerdict(t *testing.T) {
	c := defaultRules()
	c.Peers = []Peer{{AETitle: "IDMOD", Networks: nets("10.1.2.0/24"), Allow: perms("store"), RequireIdentity: true}}
	p, err := New(c, busyIdentity{})
	if err != nil {
		t.Fatal(err)
	}
	l := &Limiter{After: 2, Base: time.Minute, Max: 10 * time.Minute}
	p.WithLimiter(l)
	src := netip.MustParseAddr("10.1.2.3")
	for range 4 {
		r := rq("IDMOD")
		r.Credential = &Credential{Type: UsernamePasscode, Primary: []byte("alice"), Secondary: []byte("x")}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
		_, ref := p.Admit(ctx, r, Conn{Remote: src, TLS: true})
		cancel()
		if ref == nil || !ref.Transient() || ref.Counted || !ref.AccountLocked.IsZero() {
			t.Fatalf("busy: %+v", ref)
		}
	}
	if _, locked := l.Locked(src); locked {
		t.Fatal("busy verifications locked the source")
	}
	if f := l.accounts["alice"]; f != nil && (f.count != 0 || f.inflight != 0) {
		t.Fatalf("account state %+v", f)
	}
}

// TestForgetAccount: a new passcode ends the account's lockout.
func TestForgetAccount(t *testing.T) {
	l := &Limiter{After: 1, Base: time.Minute, Max: 10 * time.Minute}
	att, _, _ := l.Reserve(t.Context(), netip.MustParseAddr("10.1.2.3"), "alice")
	if acct, _ := att.Done(Refused, ""); acct.IsZero() {
		t.Fatal("not locked")
	}
	l.ForgetAccount("alice")
	if _, lock, _ := l.Reserve(t.Context(), netip.MustParseAddr("10.1.2.4"), "alice"); lock != nil {
		t.Fatalf("still locked: %+v", lock)
	}
}

// TestLockoutBySource64: an IPv6 source counts as its /64 (SourceKey), as
// for the budget of pending connections: rotating the address within the
// /64 does not escape the lockout; another /64, IPv4 and IPv6 loopback
// each count alone.
func TestLockoutBySource64(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := &Limiter{After: 3, Base: time.Minute, Max: 10 * time.Minute, Now: func() time.Time { return now }}
	for i := range 3 {
		l.FailedAs(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), "GUESS")
	}
	if _, locked := l.Locked(netip.MustParseAddr("2001:db8:1:2:ffff::9")); !locked {
		t.Error("another address of the same /64 is not locked out")
	}
	if _, locked := l.Locked(netip.MustParseAddr("2001:db8:1:3::1")); locked {
		t.Error("another /64 is locked out")
	}
	for _, a := range []string{"::1", "127.0.0.1", "::ffff:127.0.0.1"} {
		if got := SourceKey(netip.MustParseAddr(a)); got != netip.MustParseAddr(a).Unmap() {
			t.Errorf("SourceKey(%s) = %s", a, got)
		}
	}
	l.Succeeded(netip.MustParseAddr("2001:db8:1:2::77"), "OTHER")
	if _, locked := l.Locked(netip.MustParseAddr("2001:db8:1:2::1")); !locked {
		t.Error("another caller's success in the /64 ended the lockout")
	}
}

// TestSharedLockout: two limiters that Apply what the other Shares (the
// nodes of a cluster) lock an account and a source out after the
// refusals of both add up to After, wherever each was counted; a success
// on one node forgets the account's refusals on both; a success with no
// refusal to forget shares nothing.
func TestSharedLockout(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	a := &Limiter{After: 5, Base: time.Minute, Max: 10 * time.Minute, Now: func() time.Time { return now }}
	b := &Limiter{After: 5, Base: time.Minute, Max: 10 * time.Minute, Now: func() time.Time { return now }}
	var shared atomic.Int32
	a.Share = func(ev LockoutEvent) { shared.Add(1); b.Apply(ev) }
	b.Share = func(ev LockoutEvent) { shared.Add(1); a.Apply(ev) }
	src := netip.MustParseAddr("192.0.2.9")
	var next netip.Addr // a new source for each refusal, when valid
	refuse := func(l *Limiter, user string) {
		t.Helper()
		from := src
		if next.IsValid() {
			next = next.Next()
			from = next
		}
		att, lock, err := l.Reserve(ctx, from, user)
		if err != nil || lock != nil {
			t.Fatalf("Reserve: %v, %v", lock, err)
		}
		att.Done(Refused, "")
	}
	for range 3 {
		refuse(a, "ana")
	}
	for range 2 {
		refuse(b, "ana")
	}
	for name, l := range map[string]*Limiter{"a": a, "b": b} {
		if _, lock, _ := l.Reserve(ctx, src, "ana"); lock == nil || !lock.Account {
			t.Errorf("node %s: the account is not locked out after 3 + 2 refusals on two nodes (%+v)", name, lock)
		}
		if _, locked := l.Locked(src); !locked {
			t.Errorf("node %s: the source is not locked out", name)
		}
	}

	// A success of the account on one node forgets its refusals on both
	// (from another source each time: the account is the subject).
	now = now.Add(time.Hour)
	next = netip.MustParseAddr("198.51.100.1")
	refuse(a, "bea")
	refuse(b, "bea")
	att, _, _ := a.Reserve(ctx, netip.MustParseAddr("192.0.2.10"), "bea")
	att.Done(Verified, "")
	for range 4 {
		refuse(b, "bea")
	}
	if _, lock, _ := b.Reserve(ctx, netip.MustParseAddr("192.0.2.11"), "bea"); lock != nil && lock.Account {
		t.Errorf("node b: the account is locked out though node a forgot its refusals: %+v", lock)
	}
	// Successes with nothing to forget are not shared.
	n := shared.Load()
	a.Succeeded(netip.MustParseAddr("192.0.2.12"), "CT\x00")
	att, _, _ = a.Reserve(ctx, netip.MustParseAddr("192.0.2.12"), "carl")
	att.Done(Verified, "")
	if shared.Load() != n {
		t.Errorf("%d events shared for successes with no refusal to forget", shared.Load()-n)
	}
}
