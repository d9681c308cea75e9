package assoc

import (
	"errors"
	"testing"
	"time"

	"github.com/ward-pacs/ward/network/pdu"
)

// idleAbortAfter reports how long after start the association was aborted
// for idleness, failing if it was not within limit.
func idleAbortAfter(t *testing.T, a *Association, p *peer, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	select {
	case <-a.Done():
	case <-time.After(limit):
		t.Fatalf("not aborted within %s", limit)
	}
	took := time.Since(start)
	if !errors.Is(a.Err(), ErrTimeout) {
		t.Fatalf("ended with %v, want an idle timeout", a.Err())
	}
	p.expect(sent{typ: pdu.TypeAbort, source: pdu.AbortSourceProvider})
	return took
}

// TestRegressionIdleWhileBusy: the idle timer ran while Ward worked for
// the peer, so a C-MOVE longer than idle_timeout was aborted (issue 14,
// item 9). While Busy is held the association is not idle; the idle
// period starts when the work ends; a silent association is still aborted.
func TestRegressionIdleWhileBusy(t *testing.T) {
	const idle = 300 * time.Millisecond
	cfg := Config{ARTIMTimeout: 2 * time.Second, IdleTimeout: idle}

	t.Run("silent", func(t *testing.T) {
		a, p := serveEstablished(t, cfg)
		took := idleAbortAfter(t, a, p, time.Now(), 5*time.Second)
		if took < idle {
			t.Fatalf("aborted after %s, before the idle timeout %s", took, idle)
		}
	})

	t.Run("busy", func(t *testing.T) {
		a, p := serveEstablished(t, cfg)
		done := a.Busy()
		select {
		case <-a.Done():
			t.Fatalf("aborted while busy: %v", a.Err())
		case <-time.After(4 * idle):
		}
		start := time.Now()
		done()
		done() // a second call changes nothing
		took := idleAbortAfter(t, a, p, start, 5*time.Second)
		if took < idle-50*time.Millisecond {
			t.Fatalf("aborted %s after the work ended, before a full idle period %s", took, idle)
		}
	})

	t.Run("sending", func(t *testing.T) {
		// Ward sending (pending responses of a long operation, a large
		// object) is activity: the peer's next PDU is awaited from the
		// last PDU sent.
		const idle = time.Second
		a, p := serveEstablished(t, Config{ARTIMTimeout: 2 * time.Second, IdleTimeout: idle})
		go func() {
			for {
				_, err := p.read()
				if err != nil {
					return
				}
			}
		}()
		end := time.Now().Add(3 * idle)
		for time.Now().Before(end) {
			if err := a.Send(pdataBytes()); err != nil {
				t.Fatalf("aborted while sending: %v", err)
			}
			time.Sleep(idle / 10)
		}
		select {
		case <-a.Done():
			t.Fatalf("aborted while sending: %v", a.Err())
		default:
		}
		select {
		case <-a.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("not aborted after sending stopped")
		}
	})
}
