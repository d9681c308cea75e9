package policy

import (
	"net/netip"
	"sync"
	"time"
)

// maxTracked bounds the source addresses the lockout remembers, so that a
// scan from many addresses cannot grow it without limit; past it, entries
// that are neither locked nor recent are dropped first.
const maxTracked = 1 << 16

// Limiter holds the limits that outlive one policy (a reload keeps them):
// concurrent associations per calling AE title, and the lockout of source
// addresses whose associations keep being refused.
type Limiter struct {
	// After consecutive refusals from one address lock it out for Base,
	// doubling with each further refusal up to Max. After ≤ 0: never.
	After     int
	Base, Max time.Duration
	// Now is the clock (tests replace it).
	Now func() time.Time

	mu     sync.Mutex
	active map[string]int
	fails  map[netip.Addr]*failState
}

type failState struct {
	count int
	until time.Time // locked out until then
	last  time.Time
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// Locked reports whether a is locked out, and until when.
func (l *Limiter) Locked(a netip.Addr) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[a]
	if f == nil || !l.now().Before(f.until) {
		return time.Time{}, false
	}
	return f.until, true
}

// Failed records a refused association from a. It returns the end of the
// lockout it starts or extends (zero when a is not locked out).
func (l *Limiter) Failed(a netip.Addr) time.Time {
	if l.After <= 0 {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fails == nil {
		l.fails = map[netip.Addr]*failState{}
	}
	now := l.now()
	f := l.fails[a]
	if f == nil {
		if len(l.fails) >= maxTracked {
			l.evict(now)
		}
		f = &failState{}
		l.fails[a] = f
	}
	f.count++
	f.last = now
	if f.count < l.After {
		return time.Time{}
	}
	d := l.Base
	for i := l.After; i < f.count && d < l.Max; i++ {
		d *= 2
	}
	d = min(d, l.Max)
	f.until = now.Add(d)
	return f.until
}

// Succeeded forgets a's refusals.
func (l *Limiter) Succeeded(a netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.fails, a)
}

func (l *Limiter) evict(now time.Time) {
	stale := now.Add(-l.Max)
	for a, f := range l.fails {
		if now.After(f.until) && f.last.Before(stale) {
			delete(l.fails, a)
		}
	}
	if len(l.fails) < maxTracked {
		return
	}
	for a, f := range l.fails {
		if now.After(f.until) {
			delete(l.fails, a)
		}
		if len(l.fails) < maxTracked*3/4 {
			return
		}
	}
	// Every one locked: a hard bound beats a perfect memory.
	for a := range l.fails {
		delete(l.fails, a)
		if len(l.fails) < maxTracked*3/4 {
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
