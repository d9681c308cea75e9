package server

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
)

// retentionLock is the key of the lock a retention pass holds on an index
// several nodes share (store.Exclusive): one pass at a time in a cluster.
const retentionLock = 0x77617264_7265 // "wardre"

// errPassRunning: another retention pass is running (here or on another
// node sharing the index).
var errPassRunning = errors.New("another retention pass is running (on this node or another sharing the index): try again when it ends")

// retentionConfig is the configuration a pass applies: the file as it is
// now (the rules may have been edited since the start), else the one
// Ward started with.
func (s *Server) retentionConfig() (*config.Config, error) {
	if s.Load == nil {
		return s.Config, nil
	}
	c, err := s.Load()
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// retentionPass plans or runs the retention rules (admin.RunRetention),
// one pass at a time: in this process by a mutex, across the nodes of a
// cluster by the index's lock.
func (s *Server) retentionPass(ctx context.Context, operator string, run, force bool, maxDeletions int) (*admin.RetentionResult, error) {
	c, err := s.retentionConfig()
	if err != nil {
		return nil, err
	}
	if !run {
		return admin.RunRetention(ctx, s.archive, s.trail(), s.wardNode(), c, operator, false, false, 0)
	}
	if !s.retentionMu.TryLock() {
		return nil, errPassRunning
	}
	defer s.retentionMu.Unlock()
	if ex := s.archive.Capabilities().Exclusive; ex != nil {
		release, ok, err := ex.TryExclusive(ctx, retentionLock)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errPassRunning
		}
		defer release()
	}
	return admin.RunRetention(ctx, s.archive, s.trail(), s.wardNode(), c, operator, true, force, maxDeletions)
}

// retentionLoop runs a retention pass every [retention] interval of the
// configuration Ward started with (each wait jittered by up to a tenth
// either way, the first one too, so that the nodes of a cluster do not
// all try at once), until ctx ends. Each pass reads the rules afresh
// (scheduledPass).
func (s *Server) retentionLoop(ctx context.Context) {
	every, err := s.Config.Retention.RetentionInterval()
	if err != nil || every == 0 {
		every = config.DefaultRetentionInterval
	}
	for {
		wait := every + time.Duration((rand.Float64()*0.2-0.1)*float64(every))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		s.scheduledPass(ctx)
	}
}

// scheduledPass is one background pass: when rules are configured and
// the interval is not off, and the audit trail can be written.
func (s *Server) scheduledPass(ctx context.Context) {
	c, err := s.retentionConfig()
	if err != nil {
		s.Logger.Error("retention pass skipped: the configuration cannot be read", "err", err)
		return
	}
	if every, _ := c.Retention.RetentionInterval(); every == 0 || len(c.Retention.Rules) == 0 {
		return
	}
	if err := s.auditRefusal(); err != nil {
		s.Logger.Error("retention pass skipped: the audit trail cannot be written", "err", err)
		return
	}
	res, err := s.retentionPass(ctx, "scheduled", true, false, 0)
	switch {
	case errors.Is(err, errPassRunning):
		s.Logger.Info("retention pass skipped: another one is running")
	case err != nil:
		s.Logger.Error("retention pass failed", "err", err)
	case res.Refused != "":
		s.Logger.Error("retention pass refused", "why", res.Refused)
	default:
		failed := 0
		for _, d := range res.Deleted {
			if d.Error != "" {
				failed++
			}
		}
		s.Logger.Info("retention pass", "studies", res.Studies, "candidates", res.Candidates, "deleted", len(res.Deleted)-failed, "failed", failed, "capped", res.Capped)
	}
}
