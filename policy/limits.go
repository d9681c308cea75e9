package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sync"
	"time"
)

// maxTracked bounds the source addresses, and separately the accounts, the
// lockout remembers, so that a scan from many addresses (or with many user
// names) cannot grow it without limit; past it, entries that are neither
// locked nor busy are dropped first.
const maxTracked = 1 << 16

// Limiter holds the limits that outlive one policy (a reload keeps them):
// concurrent associations per calling AE title, the lockout of source
// addresses whose associations keep being refused, and the lockout of
// accounts (user names) whose passcodes keep being wrong, from whatever
// source.
//
// Identity verifications are reserved before they run (Reserve): at most
// After minus the failures already counted are in flight for one account
// and for one source, so parallel guesses beyond that wait for the
// verdicts before them and, once those lock the account or the source,
// are refused without being checked.
type Limiter struct {
	// After consecutive refusals from one address (failed passcodes of
	// one account) lock it out for Base, doubling with each further
	// refusal up to Max. After ≤ 0: never.
	After     int
	Base, Max time.Duration
	// Now is the clock (tests replace it).
	Now func() time.Time
	// Share, when set, is told of every refusal counted and every
	// success that forgets refusals, after the limiter has counted it
	// (and outside its lock): the nodes of a cluster pass them to one
	// another, each Applying the others', so that guesses spread over
	// the nodes behind a load balancer add up as on one node. It must not
	// block.
	Share func(LockoutEvent)

	mu       sync.Mutex
	active   map[string]int
	fails    map[netip.Addr]*failState
	accounts map[string]*failState
	// settled is closed (and replaced) whenever a reserved verification
	// ends: what waits for room in a budget looks again.
	settled chan struct{}
}

// failState counts the refusals of one source or account.
type failState struct {
	count    int
	until    time.Time // locked out until then
	last     time.Time // the last refusal
	inflight int       // verifications reserved and not yet settled
	// key is what every counted refusal of a source was attributed to
	// (calling AE title and claimed user); mixed when they differ or one
	// was not attributed. Only a success with the same key resets the
	// count: a success of another peer or user from the same address
	// does not.
	key   string
	mixed bool
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// backoff is the lockout a count of refusals earns (zero below After).
func (l *Limiter) backoff(count int) time.Duration {
	if count < l.After {
		return 0
	}
	d := l.Base
	for i := l.After; i < count && d < l.Max; i++ {
		d *= 2
	}
	return min(d, l.Max)
}

// SourceKey is the source an address counts as, for the lockout and for
// the budget of connections not yet admitted: the address itself, but an
// IPv6 address outside loopback as its /64, since one host commonly holds
// a whole /64 and could otherwise try a new address each time.
func SourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() && !a.IsLoopback() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// Locked reports whether a is locked out, and until when.
func (l *Limiter) Locked(a netip.Addr) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[SourceKey(a)]
	if f == nil || !l.now().Before(f.until) {
		return time.Time{}, false
	}
	return f.until, true
}

// Failed records a refused association from a that is not attributed to
// a peer and user (a failed TLS handshake): no success resets it. It
// returns the end of the lockout it starts or extends (zero when a is not
// locked out).
func (l *Limiter) Failed(a netip.Addr) time.Time { return l.FailedAs(a, "") }

// FailedAs records a refused association from a, attributed to key (the
// calling AE title and the user it claimed; "" for none). It returns the
// end of the lockout it starts or extends (zero when a is not locked out).
func (l *Limiter) FailedAs(a netip.Addr, key string) time.Time {
	if l.After <= 0 {
		return time.Time{}
	}
	l.mu.Lock()
	until := l.failSource(a, key, l.now())
	l.mu.Unlock()
	l.share(LockoutEvent{Refused: true, Source: SourceKey(a), Key: key})
	return until
}

func (l *Limiter) failSource(a netip.Addr, key string, now time.Time) time.Time {
	f := l.source(a, now)
	l.forgetStale(f, now)
	if key == "" || (f.count > 0 && f.key != key) {
		f.mixed = true
	}
	f.key = key
	return l.fail(f, now)
}

// fail counts one refusal on f and returns the end of the lockout it
// starts or extends.
func (l *Limiter) fail(f *failState, now time.Time) time.Time {
	f.count++
	f.last = now
	d := l.backoff(f.count)
	if d == 0 {
		return time.Time{}
	}
	f.until = now.Add(d)
	return f.until
}

// forgetStale restarts the count of a source whose last refusal is older
// than Max and which is not locked: refusals "in a row" are refusals no
// further apart than the longest lockout. (An account's count is kept
// until the account's own success.)
func (l *Limiter) forgetStale(f *failState, now time.Time) {
	if f.count > 0 && !now.Before(f.until) && now.Sub(f.last) > l.Max {
		f.count, f.key, f.mixed = 0, "", false
	}
}

// source returns the state of a's source (SourceKey), made when missing.
func (l *Limiter) source(a netip.Addr, now time.Time) *failState {
	a = SourceKey(a)
	if l.fails == nil {
		l.fails = map[netip.Addr]*failState{}
	}
	f := l.fails[a]
	if f == nil {
		if len(l.fails) >= maxTracked {
			evict(l.fails, now, l.Max)
		}
		f = &failState{}
		l.fails[a] = f
	}
	return f
}

// LockoutEvent is a refusal or a success one node counted, for the
// others (Limiter.Share, Apply).
type LockoutEvent struct {
	Refused bool       // a refusal; else a success
	Source  netip.Addr // the source it came from (invalid: none)
	Key     string     // what the source's refusal or success is attributed to
	Account string     // the account's key (a user name; "" for none)
}

// Apply counts a refusal or a success another node counted, as Done,
// FailedAs and Succeeded count their own (nothing is reserved).
func (l *Limiter) Apply(ev LockoutEvent) {
	if l.After <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	switch {
	case ev.Refused:
		if ev.Source.IsValid() {
			l.failSource(ev.Source, ev.Key, now)
		}
		if ev.Account != "" {
			l.fail(l.account(accountKey(ev.Account), now), now)
		}
	case ev.Account != "":
		if f := l.accounts[accountKey(ev.Account)]; f != nil {
			f.count, f.until = 0, time.Time{}
			if f.inflight == 0 {
				delete(l.accounts, accountKey(ev.Account))
			}
		}
	case ev.Source.IsValid():
		l.succeeded(ev.Source, ev.Key)
	}
}

func (l *Limiter) share(ev LockoutEvent) {
	if l.Share != nil {
		l.Share(ev)
	}
}

// Succeeded records an accepted association from a, attributed to key as
// for FailedAs. It forgets a's refusals only when every one of them was
// attributed to the same key: a peer that got its own settings wrong and
// then right starts afresh, while a success of another peer or user from
// the same address (a second peer that needs no identity, an attacker's
// own account) leaves the count of the others' refusals as it was.
func (l *Limiter) Succeeded(a netip.Addr, key string) {
	l.mu.Lock()
	forgot := l.succeeded(a, key)
	l.mu.Unlock()
	if forgot {
		l.share(LockoutEvent{Source: SourceKey(a), Key: key})
	}
}

// succeeded is Succeeded under l.mu; it reports whether refusals were
// forgotten.
func (l *Limiter) succeeded(a netip.Addr, key string) bool {
	a = SourceKey(a)
	f := l.fails[a]
	if f == nil || f.inflight > 0 || (f.count > 0 && (f.mixed || f.key != key)) {
		return false
	}
	delete(l.fails, a)
	return f.count > 0
}

// ForgetAccount ends user's lockout and forgets its failures: an
// administrator gave it a new passcode (ward user passwd), which works at
// once. Verifications in flight are still settled.
func (l *Limiter) ForgetAccount(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.accounts[accountKey(user)]; f != nil {
		f.count, f.until = 0, time.Time{}
		if f.inflight == 0 {
			delete(l.accounts, accountKey(user))
		}
	}
}

// Lockout is a verification refused without being checked: its account
// or source is locked out until Until.
type Lockout struct {
	Until   time.Time
	Account bool // the account is locked out (else the source)
}

// Attempt is one identity verification reserved by Reserve; Done settles
// it.
type Attempt struct {
	l       *Limiter
	src     netip.Addr
	account string // "" when the identity names no account (a JWT)
	done    bool
}

// The outcomes of a reserved verification.
const (
	// Verified: the passcode or token was right.
	Verified = iota
	// Refused: it was wrong (or named no known user).
	Refused
	// Undecided: the verification did not run to the end (no free
	// verifier before the deadline): nothing is counted.
	Undecided
)

// accountKey is the map key of a user name: the name itself, or for a
// long one (the PDU field may hold 64 KiB) its SHA-256.
func accountKey(user string) string {
	if len(user) <= 128 {
		return user
	}
	sum := sha256.Sum256([]byte(user))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Reserve reserves one identity verification from src, of the passcode
// of user (user "" for an identity that names no account, such as a JWT:
// only the source's budget applies then). While the failures counted plus
// the verifications in flight fill a budget (After), it waits until one
// in flight is settled or ctx ends; when the account or the source is
// locked out it returns the Lockout at once. With After ≤ 0 it reserves
// nothing and never refuses. On ctx's end it returns ctx's error.
func (l *Limiter) Reserve(ctx context.Context, src netip.Addr, user string) (*Attempt, *Lockout, error) {
	if l.After <= 0 {
		return &Attempt{done: true}, nil, nil
	}
	key := ""
	if user != "" {
		key = accountKey(user)
	}
	for {
		l.mu.Lock()
		now := l.now()
		f := l.source(src, now)
		l.forgetStale(f, now)
		var acct *failState
		if key != "" {
			acct = l.account(key, now)
		}
		switch {
		case acct != nil && now.Before(acct.until):
			l.mu.Unlock()
			return nil, &Lockout{Until: acct.until, Account: true}, nil
		case now.Before(f.until):
			l.mu.Unlock()
			return nil, &Lockout{Until: f.until}, nil
		case l.room(f) && (acct == nil || l.room(acct)):
			f.inflight++
			if acct != nil {
				acct.inflight++
			}
			l.mu.Unlock()
			return &Attempt{l: l, src: src, account: key}, nil, nil
		}
		wait := l.settledCh()
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// room reports whether f's budget has room for one more verification: the
// refusals counted plus those in flight stay below After, and after a
// lockout has run out, one at a time.
func (l *Limiter) room(f *failState) bool {
	if f.count >= l.After {
		return f.inflight == 0
	}
	return f.count+f.inflight < l.After
}

func (l *Limiter) settledCh() chan struct{} {
	if l.settled == nil {
		l.settled = make(chan struct{})
	}
	return l.settled
}

// account returns key's state, made when missing.
func (l *Limiter) account(key string, now time.Time) *failState {
	if l.accounts == nil {
		l.accounts = map[string]*failState{}
	}
	f := l.accounts[key]
	if f == nil {
		if len(l.accounts) >= maxTracked {
			evict(l.accounts, now, l.Max)
		}
		f = &failState{}
		l.accounts[key] = f
	}
	return f
}

// Done settles the attempt with its outcome (Verified, Refused or
// Undecided). A refusal counts against the account and the source (the
// caller must not count it again with FailedAs); a success of the account
// forgets the account's failures, not the source's. It returns the end of
// the lockout of the account and of the source that the refusal starts or
// extends (zero when none). Only the first call counts.
func (a *Attempt) Done(outcome int, key string) (account, source time.Time) {
	if a == nil || a.done {
		return
	}
	a.done = true
	l := a.l
	var ev *LockoutEvent
	defer func() {
		if ev != nil {
			l.share(*ev)
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.source(a.src, now)
	f.inflight = max(f.inflight-1, 0)
	var acct *failState
	if a.account != "" {
		acct = l.account(a.account, now)
		acct.inflight = max(acct.inflight-1, 0)
	}
	switch outcome {
	case Refused:
		source = l.failSource(a.src, key, now)
		if acct != nil {
			account = l.fail(acct, now)
		}
		ev = &LockoutEvent{Refused: true, Source: SourceKey(a.src), Key: key, Account: a.account}
	case Verified:
		if f.count == 0 && f.inflight == 0 {
			delete(l.fails, SourceKey(a.src))
		}
		if acct != nil {
			if acct.count > 0 {
				ev = &LockoutEvent{Account: a.account}
			}
			acct.count, acct.until = 0, time.Time{}
			if acct.inflight == 0 {
				delete(l.accounts, a.account)
			}
		}
	}
	if l.settled != nil {
		close(l.settled)
		l.settled = nil
	}
	return account, source
}

// evict drops entries of m to make room: first those neither locked,
// busy nor refused within max, then those neither locked nor busy (fewest
// refusals first), then, if every one is locked, any not busy.
func evict[K comparable](m map[K]*failState, now time.Time, max time.Duration) {
	stale := now.Add(-max)
	for k, f := range m {
		if f.inflight == 0 && now.After(f.until) && f.last.Before(stale) {
			delete(m, k)
		}
	}
	for level := 1; len(m) >= maxTracked*3/4 && level <= 1<<30; level *= 2 {
		for k, f := range m {
			if f.inflight == 0 && now.After(f.until) && f.count <= level {
				delete(m, k)
			}
			if len(m) < maxTracked*3/4 {
				return
			}
		}
	}
	// Every one locked: a hard bound beats a perfect memory.
	for k, f := range m {
		if f.inflight == 0 {
			delete(m, k)
		}
		if len(m) < maxTracked*3/4 {
			return
		}
	}
}

// Acquire takes one of aet's association slots; false when it already has
// max (max ≤ 0: no limit).
func (l *Limiter) Acquire(aet string, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active == nil {
		l.active = map[string]int{}
	}
	if max > 0 && l.active[aet] >= max {
		return false
	}
	l.active[aet]++
	return true
}

// Release gives back a slot taken by Acquire.
func (l *Limiter) Release(aet string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active[aet]--; l.active[aet] <= 0 {
		delete(l.active, aet)
	}
}
