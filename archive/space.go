package archive

import (
	"context"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
)

// spaceEvery is how long a free-space reading is trusted while the disk is
// far from the reserve: a C-STORE reads the cache, and at most one statfs
// a second reaches the kernel. Within twice the reserve, every C-STORE
// reads the disk afresh (the index grows too, uncounted here).
const spaceEvery = time.Second

// spaceCache is the last free-space reading, the bytes stored since (so
// that a burst of stores between two readings cannot eat the reserve),
// and when the warning about a low disk was last logged.
type spaceCache struct {
	mu        sync.Mutex
	at        time.Time
	free      int64
	since     int64
	reserve   int64
	warned    time.Time
	readError error
}

// wrote counts n bytes stored since the last reading.
func (c *spaceCache) wrote(n int64) {
	c.mu.Lock()
	c.since += n
	c.mu.Unlock()
}

// Reserve is the free space kept in reserve on a disk of total bytes:
// minFree, lowered to share of the disk when share is above 0.
func Reserve(minFree int64, share float64, total int64) int64 {
	if s := int64(share * float64(total)); share > 0 && s < minFree {
		return s
	}
	return minFree
}

// checkSpace refuses a C-STORE, before anything is written, when the blob
// store's disk has less free than the reserve (MinFree).
func (ar *Archive) checkSpace(ctx context.Context) error {
	if ar.MinFree <= 0 {
		return nil
	}
	sr := ar.capabilities().SpaceReporter
	if sr == nil {
		return nil
	}
	c := &ar.space
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if now.Sub(c.at) >= spaceEvery || c.free-c.since < 2*c.reserve {
		free, total, err := sr.Space(ctx)
		c.at, c.readError = now, err
		if err == nil {
			c.free, c.since, c.reserve = free, 0, Reserve(ar.MinFree, ar.MinFreeShare, total)
		}
	}
	free := c.free - c.since
	if c.readError != nil || free >= c.reserve {
		// A disk whose space cannot be read is not refused for it: a full
		// disk still fails the write itself cleanly.
		return nil
	}
	if now.Sub(c.warned) >= time.Minute {
		c.warned = now
		ar.Logger.Warn("refusing C-STOREs: the archive's disk is nearly full", "free", humanize.IBytes(uint64(max(free, 0))), "reserve", humanize.IBytes(uint64(c.reserve)))
	}
	// An Error Comment is an LO: 64 characters at most.
	return Failf(ErrNoSpace, "disk nearly full: %s free, %s reserve (min_free)", humanize.IBytes(uint64(max(free, 0))), humanize.IBytes(uint64(c.reserve)))
}
