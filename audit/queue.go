package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/ward-pacs/ward/durable"
)

// The forwarding queue.
//
// The queue is not a second copy of the records: it is the stretch of the
// local log (audit.log) that the collector has not been sent yet,
// described by DIR/forward/state.json (QueueDir, StateFile):
//
//   - seq, offset, hash: the last record sent, where the record after it
//     starts in audit.log, and its hash (so that a log replaced behind
//     Ward's back is noticed instead of sending from a wrong offset);
//   - frontier, frontier_seq: records before this offset have been
//     admitted to the queue or skipped;
//   - gaps: stretches of the log after offset that were skipped because
//     the queue was full.
//
// Why not a queue file of its own: the local log is already written and
// fsynced by the time a record is admitted, and it is the trail of record;
// re-deriving the queue from it makes the queue crash-safe without a
// second fsynced copy of every record, and makes "in the queue but not in
// the log" impossible. The state file is replaced atomically (written to a
// temporary file, fsynced, renamed) after each batch the collector was
// sent. A crash can lose only the latest replacement: the batch since is
// sent again (at least once). Records appended after the state was saved
// (a crash, or forwarding switched off for a while) lie between frontier
// and the end of the log: Open admits them again, in order, before new
// ones.
//
// QueueMax bounds the backlog: the bytes of the log admitted to the queue
// and not yet sent. A record that would take the backlog over QueueMax is
// not admitted: it stays in the local log only, and the run of such
// records is a gap. The first record skipped logs a warning; admission
// resumes once the backlog has fallen to three quarters of QueueMax (so
// that a slow collector does not cut the stream into many small gaps), and
// a second warning names the gap's records. The sender marks each gap at
// the collector, in its place in the stream, with a WARD-GAP message.
// Disk use is the state file: a few hundred bytes and one entry per gap.
//
// Locks: Log.mu, queue.mu and forwarder.connMu are never held together.
// The log's writer goroutine calls admit (queue.mu) without Log.mu; the
// sender takes queue.mu only to read or move the head, never across I/O.

// QueueDir is the forwarder's directory in the audit directory, and
// StateFile its state.
const (
	QueueDir  = "forward"
	StateFile = "state.json"
)

// gap is a stretch of the log that was not admitted: bytes [From, To),
// records First..Last.
type gap struct {
	From  int64  `json:"from"`
	To    int64  `json:"to"`
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

type queueState struct {
	Seq         uint64 `json:"seq"`
	Offset      int64  `json:"offset"`
	Hash        string `json:"hash"`
	Frontier    int64  `json:"frontier"`
	FrontierSeq uint64 `json:"frontier_seq"`
	Gaps        []gap  `json:"gaps,omitempty"`
}

type queue struct {
	statePath string
	logf      *os.File // audit.log, read only
	max       int64
	logger    *slog.Logger
	signal    func() // records were admitted

	mu       sync.Mutex
	st       queueState
	gapBytes int64 // bytes in st.Gaps
	full     bool  // skipping: admission waits for the backlog to fall
	// the records skipped since full was set, for the log
	skipFirst, skipLast uint64
}

// batch is what the sender takes from the head of the queue: a gap's mark
// or records; end, seq and hash describe where the queue's head moves once
// it was sent.
type batch struct {
	gap     *gap
	records []*Record
	end     int64
	seq     uint64
	hash    string
}

func openQueue(dir, logPath string, qmax int64, logger *slog.Logger, logEnd int64, logSeq uint64, logHash string, signal func()) (*queue, error) {
	qdir := filepath.Join(dir, QueueDir)
	if err := durable.MkdirAll(qdir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	logf, err := os.Open(logPath)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	q := &queue{statePath: filepath.Join(qdir, StateFile), logf: logf, max: qmax, logger: logger, signal: signal}
	fresh := queueState{Seq: logSeq, Offset: logEnd, Hash: logHash, Frontier: logEnd, FrontierSeq: logSeq}
	st, err := q.load()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		logger.Info("audit forwarding starts with the next record", "state", q.statePath)
		st = fresh
	case err != nil:
		logger.Warn("audit forwarding state unreadable; forwarding restarts with the next record (records before it are in the local log only)", "state", q.statePath, "err", err.Error())
		st = fresh
	default:
		if why := q.check(st, logEnd); why != "" {
			logger.Warn("audit forwarding state does not match the audit log; forwarding restarts with the next record (records before it are in the local log only)",
				"state", q.statePath, "reason", why)
			st = fresh
		}
	}
	q.st = st
	for _, g := range st.Gaps {
		q.gapBytes += g.To - g.From
	}
	if err := q.readmit(logEnd, logSeq); err != nil {
		logf.Close()
		return nil, err
	}
	q.save(q.snapshot())
	return q, nil
}

func (q *queue) load() (queueState, error) {
	var st queueState
	b, err := os.ReadFile(q.statePath)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	return st, nil
}

// check says what is wrong with a saved state against the log, "" when
// nothing is.
func (q *queue) check(st queueState, logEnd int64) string {
	if st.Offset < 0 || st.Offset > st.Frontier || st.Frontier > logEnd {
		return fmt.Sprintf("offsets %d..%d outside the log (%d bytes)", st.Offset, st.Frontier, logEnd)
	}
	prev := st.Offset
	for _, g := range st.Gaps {
		if g.From < prev || g.To <= g.From || g.To > st.Frontier || g.Last < g.First {
			return "gaps out of order"
		}
		prev = g.To
	}
	if seq, hash, ok := q.recordBefore(st.Offset); !ok || seq != st.Seq || (st.Hash != "" && hash != st.Hash) {
		return fmt.Sprintf("no record %d ends at offset %d", st.Seq, st.Offset)
	}
	if seq, _, ok := q.recordBefore(st.Frontier); !ok || seq != st.FrontierSeq {
		return fmt.Sprintf("no record %d ends at offset %d", st.FrontierSeq, st.Frontier)
	}
	return ""
}

// recordBefore reads the record that ends at off (seq 0 at offset 0).
func (q *queue) recordBefore(off int64) (seq uint64, hash string, ok bool) {
	if off == 0 {
		return 0, ZeroHash, true
	}
	end, line, err := lastLine(q.logf, off)
	if err != nil || end != off || line == nil {
		return 0, "", false
	}
	r, err := parseRecord(line)
	if err != nil {
		return 0, "", false
	}
	return r.Seq, r.Hash, true
}

// readmit admits the records between the saved frontier and the end of
// the log, in order. Nothing is sent meanwhile, so once the queue is full
// the rest of them is one gap, not read.
func (q *queue) readmit(logEnd int64, logSeq uint64) error {
	if q.st.Frontier >= logEnd {
		return nil
	}
	from, fromSeq, n := q.st.Frontier, q.st.FrontierSeq, 0
	gapsBefore := q.gapBytes
	br := bufio.NewReaderSize(io.NewSectionReader(q.logf, from, logEnd-from), 64<<10)
	pos, seq := from, q.st.FrontierSeq
	for pos < logEnd && !q.full {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("audit: forwarding: reading the log at %d: %w", pos, err)
		}
		seq++ // a log's seqs count up by one (Verify)
		q.admitLocked(pos, pos+int64(len(line)), seq)
		pos += int64(len(line))
		n++
	}
	if pos < logEnd {
		q.skip(pos, logEnd, seq+1, logSeq)
		q.st.Frontier, q.st.FrontierSeq = logEnd, logSeq
	}
	q.logger.Info("audit forwarding: records written while the forwarder was not running are admitted to the queue",
		"records", logSeq-fromSeq, "read", n, "skipped_bytes", q.gapBytes-gapsBefore)
	return nil
}

// admit puts the record at [from, to) of the log, seq, in the queue, or in
// a gap when the queue is full. The log's writer calls it in order, for
// fsynced records only. It does no I/O.
func (q *queue) admit(from, to int64, seq uint64) {
	q.mu.Lock()
	q.admitLocked(from, to, seq)
	q.mu.Unlock()
	q.signal()
}

func (q *queue) admitLocked(from, to int64, seq uint64) {
	size := to - from
	backlog := q.st.Frontier - q.st.Offset - q.gapBytes
	limit := q.max
	if q.full {
		limit -= q.max / 4
	}
	if backlog+size > limit {
		if !q.full {
			q.full = true
			q.skipFirst = seq
			q.logger.Warn("audit forwarding queue full: new records are kept in the local log only, and the gap is marked at the collector",
				"queue_max", q.max, "first_seq", seq)
		}
		q.skipLast = seq
		q.skip(from, to, seq, seq)
	} else if q.full {
		q.full = false
		q.logger.Warn("audit forwarding queue has room again; records not forwarded (they are in the local log)",
			"first_seq", q.skipFirst, "last_seq", q.skipLast)
	}
	q.st.Frontier, q.st.FrontierSeq = to, seq
}

// skip adds [from, to), records first..last, to the gaps.
func (q *queue) skip(from, to int64, first, last uint64) {
	if n := len(q.st.Gaps); n > 0 && q.st.Gaps[n-1].To == from {
		q.st.Gaps[n-1].To, q.st.Gaps[n-1].Last = to, last
	} else {
		q.st.Gaps = append(q.st.Gaps, gap{From: from, To: to, First: first, Last: last})
	}
	q.gapBytes += to - from
}

// pending reports whether anything waits to be sent.
func (q *queue) pending() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st.Offset < q.st.Frontier
}

// backlog is the bytes admitted and not yet sent.
func (q *queue) backlog() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st.Frontier - q.st.Offset - q.gapBytes
}

// next reads the batch at the head of the queue, at most about maxBytes of
// records (at least one); nil when the queue is empty. Only the sender
// calls it, and it changes nothing: sent does.
func (q *queue) next(maxBytes int64) (*batch, error) {
	q.mu.Lock()
	off, end, seq := q.st.Offset, q.st.Frontier, q.st.Seq
	var g *gap
	if len(q.st.Gaps) > 0 {
		if q.st.Gaps[0].From == off {
			gg := q.st.Gaps[0]
			g = &gg
		} else {
			end = q.st.Gaps[0].From
		}
	}
	q.mu.Unlock()
	if g != nil {
		s, hash, ok := q.recordBefore(g.To)
		if !ok || s != g.Last {
			hash = ""
		}
		return &batch{gap: g, end: g.To, seq: g.Last, hash: hash}, nil
	}
	if off >= end {
		return nil, nil
	}
	b := &batch{end: off, seq: seq}
	br := bufio.NewReaderSize(io.NewSectionReader(q.logf, off, end-off), 64<<10)
	for b.end < end && b.end-off < maxBytes {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("reading the audit log at %d: %w", b.end, err)
		}
		b.end += int64(len(line))
		b.seq++
		r, err := parseRecord(line[:len(line)-1])
		if err != nil {
			// Verify reports it; the collector cannot be sent it.
			q.logger.Error("audit forwarding: a log line is not a record; not forwarded", "seq", b.seq, "err", err.Error())
			b.hash = ""
			continue
		}
		b.records = append(b.records, r)
		b.seq, b.hash = r.Seq, r.Hash
	}
	return b, nil
}

// sent removes b from the head of the queue and saves the state.
func (q *queue) sent(b *batch) error {
	q.mu.Lock()
	q.st.Offset, q.st.Seq, q.st.Hash = b.end, b.seq, b.hash
	if b.gap != nil && len(q.st.Gaps) > 0 && q.st.Gaps[0].From == b.gap.From {
		q.gapBytes -= q.st.Gaps[0].To - q.st.Gaps[0].From
		q.st.Gaps = append([]gap(nil), q.st.Gaps[1:]...)
	}
	st := q.snapshotLocked()
	q.mu.Unlock()
	q.save(st)
	return nil
}

func (q *queue) snapshot() queueState {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.snapshotLocked()
}

func (q *queue) snapshotLocked() queueState {
	st := q.st
	st.Gaps = append([]gap(nil), q.st.Gaps...)
	return st
}

// save replaces the state file atomically. A failure is logged: the
// records stay in the log, and the worst outcome is sending some again.
func (q *queue) save(st queueState) {
	if err := writeFileAtomic(q.statePath, st); err != nil {
		q.logger.Error("audit forwarding: saving the queue state failed; records may be sent again after a restart", "state", q.statePath, "err", err.Error())
	}
}

func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// close saves the state and closes the log's reading handle.
func (q *queue) close() {
	q.save(q.snapshot())
	q.logf.Close()
}
