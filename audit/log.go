package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// FileName is the log's file in its directory.
const FileName = "audit.log"

// Batching: records are appended and fsynced together, at most every
// FlushInterval or every FlushRecords records, whichever comes first.
const (
	FlushInterval = 100 * time.Millisecond
	FlushRecords  = 256
	// QueueLength bounds the records waiting for the writer; senders block
	// when it is full (bounded memory, nothing dropped).
	QueueLength = 1024
)

// ZeroHash is the prev of the first record.
var ZeroHash = hex.EncodeToString(make([]byte, sha256.Size))

// ErrLocked: another Log (in this or another process) has the file open.
var ErrLocked = errors.New("audit: log locked")

// ErrClosed: Write after Close.
var ErrClosed = errors.New("audit: log closed")

// Record is one line of the log. The line is the JSON encoding of the
// fields in this order; Hash is the hex SHA-256 of the line without its
// hash member (everything before `,"hash":` followed by `}`), and Prev is
// the Hash of the line before (ZeroHash for the first).
type Record struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Prev     string    `json:"prev"`
	Event    string    `json:"event"`
	Outcome  int       `json:"outcome"`
	Peers    []string  `json:"peers,omitempty"`
	Patients []string  `json:"patients,omitempty"`
	// XML is the AuditMessage.
	XML  string `json:"xml"`
	Hash string `json:"hash"`
}

// hashSuffix is how every line ends: `,"hash":"<64 hex>"}`.
const hashSuffixLen = len(`,"hash":""}`) + 2*sha256.Size

// encode returns the line (without newline) for r, setting r.Hash.
func (r *Record) encode() ([]byte, error) {
	r.Hash = ""
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the XML stays readable
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	body := append(bytes.TrimSuffix(b, []byte(`,"hash":""}`)), '}')
	sum := sha256.Sum256(body)
	r.Hash = hex.EncodeToString(sum[:])
	return append(body[:len(body)-1], `,"hash":"`+r.Hash+`"}`...), nil
}

// lineHash recomputes the hash of a line and returns it with the hash the
// line claims.
func lineHash(line []byte) (got, claimed string, ok bool) {
	if len(line) < hashSuffixLen || !bytes.HasPrefix(line[len(line)-hashSuffixLen:], []byte(`,"hash":"`)) {
		return "", "", false
	}
	claimed = string(line[len(line)-hashSuffixLen+len(`,"hash":"`) : len(line)-2])
	body := append(append([]byte(nil), line[:len(line)-hashSuffixLen]...), '}')
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:]), claimed, true
}

// Log is the local hash-chained audit log. One goroutine owns the file:
// Write queues a message (blocking only while the queue is full) and the
// writer appends and fsyncs in batches, so that callers never wait on the
// disk. Close flushes and fsyncs what was queued.
type Log struct {
	path   string
	logger *slog.Logger
	f      *os.File

	mu     sync.RWMutex // guards closed against sends on ch
	closed bool
	ch     chan item
	done   chan struct{}

	// writer state
	seq  uint64
	prev string
	end  int64 // the file's size: where the next record starts
	err  error

	fw *forwarder // nil when not forwarding
}

type item struct {
	m     *Message
	flush chan error // a flush barrier when non-nil
}

// Option changes how Open opens a log.
type Option func(*options)

type options struct {
	forward *ForwardConfig
}

// WithForward makes the log forward every record to a collector by syslog
// over TLS (PS3.15 A.6); see ForwardConfig. An empty Addr forwards nothing.
func WithForward(cfg ForwardConfig) Option {
	return func(o *options) {
		if cfg.Addr != "" {
			o.forward = &cfg
		}
	}
}

// Open opens (creating) DIR/audit.log and continues its chain from the last
// record. A partial last line (a crash in the middle of an append) is cut
// off. logger may be nil. With WithForward, every record is also sent to a
// collector (forward.go), from a queue kept in DIR/forward (queue.go).
func Open(dir string, logger *slog.Logger, opts ...Option) (*Log, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := mkdirAllSync(dir); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := syncDir(dir); err != nil { // the file may be new
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := lock(f); err != nil {
		f.Close()
		return nil, err
	}
	l := &Log{path: path, logger: logger, f: f, ch: make(chan item, QueueLength), done: make(chan struct{}), prev: ZeroHash}
	if err := l.resume(); err != nil {
		f.Close()
		return nil, err
	}
	if o.forward != nil {
		fw, err := newForwarder(dir, path, *o.forward, logger, l.end, l.seq, l.prev)
		if err != nil {
			f.Close()
			return nil, err
		}
		l.fw = fw
	}
	go l.run()
	return l, nil
}

// Path is the log file.
func (l *Log) Path() string { return l.path }

// resume finds the last complete record and positions the file after it.
func (l *Log) resume() error {
	st, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	size := st.Size()
	end, last, err := lastLine(l.f, size)
	if err != nil {
		return fmt.Errorf("audit: %s: %w", l.path, err)
	}
	if end < size {
		l.logger.Warn("audit log: cutting a partial last record", "path", l.path, "bytes", size-end)
		if err := l.f.Truncate(end); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if last != nil {
		var r Record
		if err := json.Unmarshal(last, &r); err != nil {
			return fmt.Errorf("audit: %s: last record: %w", l.path, err)
		}
		l.seq, l.prev = r.Seq, r.Hash
	}
	l.end = end
	_, err = l.f.Seek(end, io.SeekStart)
	return err
}

// lastLine returns the offset just after the last newline and the last
// complete line (nil when none), reading backwards.
func lastLine(f io.ReaderAt, size int64) (int64, []byte, error) {
	const chunk = 64 << 10
	var tail []byte
	end := int64(-1)
	for off := size; off > 0; {
		n := int64(chunk)
		if off < n {
			n = off
		}
		off -= n
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return 0, nil, err
		}
		tail = append(buf, tail...)
		if end < 0 {
			if i := bytes.LastIndexByte(tail, '\n'); i >= 0 {
				end = off + int64(i) + 1
				tail = tail[:i]
			} else {
				continue
			}
		}
		if i := bytes.LastIndexByte(tail, '\n'); i >= 0 {
			return end, tail[i+1:], nil
		}
		if off == 0 {
			return end, tail, nil
		}
	}
	if end < 0 {
		return 0, nil, nil
	}
	return end, tail, nil
}

// Write queues m. It blocks while the queue is full; it returns ErrClosed
// after Close.
func (l *Log) Write(m *Message) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	l.ch <- item{m: m}
	return nil
}

// Sync waits until everything queued before it is appended and fsynced.
func (l *Log) Sync() error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	done := make(chan error, 1)
	l.ch <- item{flush: done}
	l.mu.RUnlock()
	return <-done
}

// Close flushes and fsyncs the queue and closes the file; when forwarding,
// it then gives the forwarder a short time (2 s) to send
// what the collector will take, and never waits longer. It returns the
// first write error the log met (forwarding errors are logged, not
// returned: the local log is the trail of record).
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return l.err
	}
	l.closed = true
	close(l.ch)
	l.mu.Unlock()
	<-l.done
	if l.fw != nil {
		l.fw.close()
	}
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = err
	}
	return l.err
}

func (l *Log) run() {
	defer close(l.done)
	var buf []byte
	pending := 0
	// ends are the records' ends in buf and their seqs, for the forwarder.
	type mark struct {
		end int
		seq uint64
	}
	var ends []mark
	tick := time.NewTicker(FlushInterval)
	defer tick.Stop()
	flush := func() error {
		if pending == 0 {
			return l.err
		}
		if l.err == nil {
			if _, err := l.f.Write(buf); err != nil {
				l.err = fmt.Errorf("audit: appending: %w", err)
			} else if err := l.f.Sync(); err != nil {
				l.err = fmt.Errorf("audit: fsync: %w", err)
			}
			if l.err != nil {
				l.logger.Error("audit log write failed; records are being lost", "path", l.path, "err", l.err.Error())
			} else if l.fw != nil {
				// Only fsynced records enter the forwarding queue.
				from := l.end
				for _, m := range ends {
					l.fw.admit(from, l.end+int64(m.end), m.seq)
					from = l.end + int64(m.end)
				}
			}
			l.end += int64(len(buf))
		}
		buf, pending, ends = buf[:0], 0, ends[:0]
		return l.err
	}
	for {
		select {
		case it, ok := <-l.ch:
			if !ok {
				flush()
				return
			}
			if it.flush != nil {
				it.flush <- flush()
				continue
			}
			line, err := l.next(it.m)
			if err != nil {
				l.logger.Error("audit record not encoded", "err", err.Error())
				continue
			}
			buf = append(append(buf, line...), '\n')
			ends = append(ends, mark{len(buf), l.seq})
			pending++
			if pending >= FlushRecords {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

// next encodes m as the next record of the chain.
func (l *Log) next(m *Message) ([]byte, error) {
	x, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	r := &Record{Seq: l.seq + 1, Time: m.Event.DateTime.UTC(), Prev: l.prev, Event: m.Name(), Outcome: m.Event.Outcome,
		Peers: m.Peers(), Patients: m.Patients(), XML: string(x)}
	line, err := r.encode()
	if err != nil {
		return nil, err
	}
	l.seq, l.prev = r.Seq, r.Hash
	return line, nil
}
