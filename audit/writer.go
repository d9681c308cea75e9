package audit

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// The writer goroutine: it owns the file, the chain's head (seq, prev,
// end) and the records waiting to be appended. See Log for what happens
// when the file cannot be written.

// writer is run's state.
type writer struct {
	l *Log

	pending      []*Record // not yet in the chain (seq, prev, hash unset)
	pendingBytes int

	failing   bool
	since     time.Time // the first failed append of this outage
	lastErr   error
	lastTry   time.Time
	lost      int
	lostByEvt map[string]int
	dirty     bool // the file may hold a partial batch after l.end
}

func (l *Log) run() {
	defer close(l.done)
	w := &writer{l: l}
	tick := time.NewTicker(FlushInterval)
	defer tick.Stop()
	for {
		select {
		case it, ok := <-l.ch:
			if !ok {
				if err := w.flush(0); err != nil {
					n := len(w.pending) + w.lost
					l.err = fmt.Errorf("audit: %d records not written: %w", n, err)
					l.logger.Error("audit log closed while it could not be written: records lost", "path", l.path, "records", n, "err", err.Error())
				}
				return
			}
			if it.flush != nil {
				gap := time.Duration(0)
				if it.probe {
					gap = ProbeInterval
				}
				it.flush <- w.flush(gap)
				continue
			}
			w.add(it.m)
			if !w.failing && len(w.pending) >= FlushRecords {
				w.flush(RetryInterval)
			}
		case <-tick.C:
			w.flush(RetryInterval)
		}
	}
}

// add makes m a pending record, or counts it as lost when the log is
// failing and holds all it may.
func (w *writer) add(m *Message) {
	x, err := m.Marshal()
	if err != nil {
		w.l.logger.Error("audit record not encoded", "event", m.Name(), "err", err.Error())
		return
	}
	if w.failing && (len(w.pending) >= MaxHeld || w.pendingBytes+len(x) > MaxHeldBytes) {
		if w.lost == 0 {
			w.l.logger.Error("audit log still cannot be written and the records held in memory reached their bound: records are now counted and lost; the count is recorded once the log can be written",
				"path", w.l.path, "held", len(w.pending))
		}
		w.lost++
		if w.lostByEvt == nil {
			w.lostByEvt = map[string]int{}
		}
		w.lostByEvt[m.Name()]++
		return
	}
	w.pending = append(w.pending, &Record{Time: m.Event.DateTime.UTC(), Event: m.Name(), Outcome: m.Event.Outcome,
		Peers: m.Peers(), Patients: m.Patients(), XML: string(x)})
	w.pendingBytes += len(x)
}

// flush appends the pending records (and, after an outage, the record of
// the outage) and fsyncs. While failing, it tries only when minGap has
// passed since the last try.
func (w *writer) flush(minGap time.Duration) error {
	l := w.l
	if len(w.pending) == 0 && !w.failing {
		return nil
	}
	now := time.Now()
	if w.failing && now.Sub(w.lastTry) < minGap {
		return w.lastErr
	}
	w.lastTry = now
	recs := w.pending
	if w.failing {
		recs = append(slices.Clip(recs), w.outageRecord(now))
	}
	seq, prev := l.seq, l.prev
	var buf []byte
	type mark struct {
		end int
		seq uint64
	}
	ends := make([]mark, 0, len(recs))
	for _, r := range recs {
		r.Seq, r.Prev = seq+1, prev
		line, err := r.encode(l.key)
		if err != nil {
			l.logger.Error("audit record not encoded", "event", r.Event, "err", err.Error())
			continue
		}
		seq, prev = r.Seq, r.Hash
		buf = append(append(buf, line...), '\n')
		ends = append(ends, mark{len(buf), seq})
	}
	if err := w.append(buf); err != nil {
		if !w.failing {
			w.failing, w.since = true, now
			l.logger.Error("audit log cannot be written; records are held in memory and it is tried again every second",
				"path", l.path, "err", err.Error(), "retry", RetryInterval.String(), "max_held", MaxHeld)
		}
		w.lastErr = err
		l.failure.Store(&err)
		return err
	}
	if l.fw != nil {
		// Only fsynced records enter the forwarding queue.
		from := l.end
		for _, m := range ends {
			l.fw.admit(from, l.end+int64(m.end), m.seq)
			from = l.end + int64(m.end)
		}
	}
	l.end += int64(len(buf))
	l.seq, l.prev = seq, prev
	if w.failing {
		l.logger.Warn("audit log written again; the outage is recorded in it",
			"path", l.path, "since", w.since.UTC().Format(time.RFC3339), "held_records_written", len(w.pending), "lost_records", w.lost)
		w.failing, w.lost, w.lostByEvt, w.lastErr = false, 0, nil, nil
		l.failure.Store(nil)
	}
	if cap(w.pending) > 2*FlushRecords {
		w.pending = nil // let an outage's backlog go
	} else {
		clear(w.pending)
		w.pending = w.pending[:0]
	}
	w.pendingBytes = 0
	return nil
}

// append writes buf at the end of the chain and fsyncs it. On failure the
// file is cut back to its last whole record, so that the next attempt
// starts clean (when cutting fails too, the next attempt cuts first).
func (w *writer) append(buf []byte) error {
	l := w.l
	if w.dirty {
		if err := w.cut(); err != nil {
			return err
		}
	}
	_, err := l.out.Write(buf)
	if err != nil {
		err = fmt.Errorf("audit: appending: %w", err)
	} else if serr := l.out.Sync(); serr != nil {
		err = fmt.Errorf("audit: fsync: %w", serr)
	}
	if err != nil {
		w.dirty = true
		if cerr := w.cut(); cerr != nil {
			l.logger.Error("audit log: cutting a failed append back", "path", l.path, "err", cerr.Error())
		}
	}
	return err
}

// cut truncates the file to the end of the last whole record.
func (w *writer) cut() error {
	l := w.l
	if err := l.out.Truncate(l.end); err != nil {
		return fmt.Errorf("audit: truncating after a failed append: %w", err)
	}
	if _, err := l.out.Seek(l.end, io.SeekStart); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	w.dirty = false
	return nil
}

// outageRecord is the record that closes an outage: a Security Alert,
// Audit Recording Started, with what was lost.
func (w *writer) outageRecord(now time.Time) *Record {
	var parts []string
	for _, e := range slices.Sorted(maps.Keys(w.lostByEvt)) {
		parts = append(parts, fmt.Sprintf("%d %s", w.lostByEvt[e], e))
	}
	desc := fmt.Sprintf("the audit log could not be written from %s to %s (%v); %d records held meanwhile were written before this one; %d records were lost",
		w.since.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), w.lastErr, len(w.pending), w.lost)
	if len(parts) > 0 {
		desc += " (" + strings.Join(parts, ", ") + ")"
	}
	m := AuditRecordingResumed(w.l.ward, w.lost > 0, desc, now)
	x, err := m.Marshal()
	if err != nil {
		x = nil
	}
	errText := ""
	if w.lastErr != nil {
		errText = w.lastErr.Error()
	}
	return &Record{Time: now.UTC(), Event: m.Name(), Outcome: m.Event.Outcome, Peers: m.Peers(), XML: string(x),
		Outage: &Outage{From: w.since.UTC(), To: now.UTC(), Lost: w.lost, LostEvents: maps.Clone(w.lostByEvt), Err: errText}}
}
