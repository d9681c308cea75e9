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
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/durable"
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
// fields in this order; Hash is computed over the line without its hash
// member (everything before `,"hash":` followed by `}`), and Prev is the
// Hash of the line before (ZeroHash for the first).
//
// Two formats: V absent (format 1, written before the log had a key): Hash
// is the hex SHA-256 of that text; V = 2: Hash is the hex HMAC-SHA256 of
// it under the log's key (key.go).
type Record struct {
	V        int       `json:"v,omitempty"`
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Prev     string    `json:"prev"`
	Event    string    `json:"event"`
	Outcome  int       `json:"outcome"`
	Peers    []string  `json:"peers,omitempty"`
	Patients []string  `json:"patients,omitempty"`
	// Outage is set on the record that closes a time when the log could
	// not be written (writer.go): what was lost, and when.
	Outage *Outage `json:"outage,omitempty"`
	// XML is the AuditMessage.
	XML  string `json:"xml"`
	Hash string `json:"hash"`
}

// Outage says that the log could not be written from From to To (Err
// says why), and that Lost records of that time are not in the log: they
// were dropped once the records held in memory reached MaxHeld. Records
// held were written, before the record that carries the Outage.
type Outage struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	Lost int       `json:"lost"`
	// LostEvents counts the lost records per event.
	LostEvents map[string]int `json:"lost_events,omitempty"`
	Err        string         `json:"err"`
}

// Record formats.
const (
	formatHash = 0 // written as an absent "v": SHA-256 chain
	formatMAC  = 2 // HMAC-SHA256 under the log's key
)

// hashSuffix is how every line ends: `,"hash":"<64 hex>"}`.
const hashSuffixLen = len(`,"hash":""}`) + 2*sha256.Size

// encode returns the line (without newline) for r, setting r.V and r.Hash:
// a keyed record when key is not nil.
func (r *Record) encode(key *Key) ([]byte, error) {
	r.Hash = ""
	r.V = formatHash
	if key != nil {
		r.V = formatMAC
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the XML stays readable
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	body := append(bytes.TrimSuffix(b, []byte(`,"hash":""}`)), '}')
	r.Hash = bodySum(body, key)
	return append(body[:len(body)-1], `,"hash":"`+r.Hash+`"}`...), nil
}

// bodySum is the hash of a record's text: SHA-256, or the HMAC under key.
func bodySum(body []byte, key *Key) string {
	if key != nil {
		return key.sum(body)
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// lineHash recomputes the hash of a line (with key for a keyed one) and
// returns it with the hash the line claims.
func lineHash(line []byte, key *Key) (got, claimed string, ok bool) {
	if len(line) < hashSuffixLen || !bytes.HasPrefix(line[len(line)-hashSuffixLen:], []byte(`,"hash":"`)) {
		return "", "", false
	}
	claimed = string(line[len(line)-hashSuffixLen+len(`,"hash":"`) : len(line)-2])
	body := append(append([]byte(nil), line[:len(line)-hashSuffixLen]...), '}')
	return bodySum(body, key), claimed, true
}

// Log is the local hash-chained audit log. One goroutine owns the file:
// Write queues a message (blocking only while the queue is full) and the
// writer appends and fsyncs in batches, so that callers never wait on the
// disk. Close flushes and fsyncs what was queued.
//
// When an append or its fsync fails (a full disk, an I/O error), the
// writer cuts the file back to its last whole record and tries again every
// RetryInterval; meanwhile Err reports the failure, records are held in
// memory (up to MaxHeld records or MaxHeldBytes) and those beyond are
// dropped and counted. Once the log can be written again, the held records
// are appended, then a Security Alert (Audit Recording Started) whose
// Outage says when the log could not be written and how many records were
// lost: the gap is part of the chain, and Verify reports it.
type Log struct {
	path   string
	logger *slog.Logger
	f      *os.File
	out    appender // f, or a wrapper in tests
	key    *Key     // nil: format 1 records (no key given)
	ward   Node     // the audit source of the outage records

	mu     sync.RWMutex // guards closed against sends on ch
	closed bool
	ch     chan item
	done   chan struct{}

	// writer state
	seq  uint64
	prev string
	end  int64 // the file's size: where the next record starts
	err  error // what Close returns

	failure atomic.Pointer[error] // non-nil while the log cannot be written

	fw *forwarder // nil when not forwarding
}

// appender is what the writer does to the file.
type appender interface {
	Write([]byte) (int, error)
	Sync() error
	Truncate(int64) error
	Seek(int64, int) (int64, error)
}

// Holding records while the log cannot be written, and retrying.
var (
	// RetryInterval is how often a failing log is tried again.
	RetryInterval = time.Second
	// ProbeInterval is how often Probe may have it tried, whatever the
	// number of callers.
	ProbeInterval = 50 * time.Millisecond
	// MaxHeld and MaxHeldBytes bound the records held in memory while the
	// log cannot be written; beyond them records are counted, not kept.
	MaxHeld      = 4096
	MaxHeldBytes = 16 << 20
)

type item struct {
	m     *Message
	flush chan error // a flush barrier when non-nil
	probe bool       // the barrier is a Probe's
}

// Option changes how Open opens a log.
type Option func(*options)

type options struct {
	forward *ForwardConfig
	keyFile string
	ward    Node
	wrap    func(appender) appender // tests: inject write failures
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

// WithKeyFile signs the log's records with the key in path (key.go),
// making the key there when the log has no keyed record yet. Without it,
// records are format 1 (a plain hash chain) and a log whose last record is
// keyed is refused (ErrNoKey).
func WithKeyFile(path string) Option {
	return func(o *options) { o.keyFile = path }
}

// WithSource names Ward (its AE title) in the records the log writes
// itself (an outage's Security Alert).
func WithSource(ward Node) Option {
	return func(o *options) { o.ward = ward }
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
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := durable.Sync(dir); err != nil { // the file may be new
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := lock(f); err != nil {
		f.Close()
		return nil, err
	}
	if o.ward.AETitle == "" {
		o.ward = Node{AETitle: "WARD"}
	}
	l := &Log{path: path, logger: logger, f: f, out: f, ward: o.ward, ch: make(chan item, QueueLength), done: make(chan struct{}), prev: ZeroHash}
	if o.wrap != nil {
		l.out = o.wrap(f)
	}
	lastKeyed, err := l.resume()
	if err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case o.keyFile != "":
		k, created, err := openKey(o.keyFile, l.seq, lastKeyed)
		if err != nil {
			f.Close()
			return nil, err
		}
		if created {
			logger.Info("audit log key created: records are signed with it (HMAC-SHA256); keep a copy away from this machine to verify the log with",
				"key", k.Path, "from_seq", k.From)
		} else if l.seq+1 < k.From {
			logger.Warn("audit log: it ends before the record its key was made after (records were cut from its end, or the key is another log's); ward audit verify will report it",
				"key", k.Path, "from_seq", k.From, "last_seq", l.seq)
		} else if !lastKeyed && l.seq >= k.From {
			logger.Warn("audit log: records at or after the key's first were written without it (an older Ward, or an edit); ward audit verify will report them",
				"key", k.Path, "from_seq", k.From, "last_seq", l.seq)
		}
		l.key = k
	case lastKeyed:
		f.Close()
		return nil, fmt.Errorf("%w: %s ends with a keyed record; open it with its key", ErrNoKey, path)
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

// Err is nil while the log is written, and the error of the last attempt
// while it cannot be (records are then held or lost, see Log).
func (l *Log) Err() error {
	if p := l.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// Backlog is what waits, for metrics: the records queued for the log's
// writer, and the bytes of the log not yet sent to the collector (0 when
// not forwarding). Records held in memory while the log cannot be
// written are not counted (Err tells that).
func (l *Log) Backlog() (records int, forwardBytes int64) {
	records = len(l.ch)
	if l.fw != nil {
		forwardBytes = l.fw.q.backlog()
	}
	return records, forwardBytes
}

// resume finds the last complete record and positions the file after it.
// It reports whether that record is keyed.
func (l *Log) resume() (keyed bool, err error) {
	st, err := l.f.Stat()
	if err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	size := st.Size()
	end, last, err := lastLine(l.f, size)
	if err != nil {
		return false, fmt.Errorf("audit: %s: %w", l.path, err)
	}
	if end < size {
		l.logger.Warn("audit log: cutting a partial last record", "path", l.path, "bytes", size-end)
		if err := l.f.Truncate(end); err != nil {
			return false, fmt.Errorf("audit: %w", err)
		}
	}
	if last != nil {
		var r Record
		if err := json.Unmarshal(last, &r); err != nil {
			return false, fmt.Errorf("audit: %s: last record: %w", l.path, err)
		}
		l.seq, l.prev = r.Seq, r.Hash
		keyed = r.V != formatHash
	}
	l.end = end
	_, err = l.f.Seek(end, io.SeekStart)
	return keyed, err
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

// Sync waits until everything queued before it is appended and fsynced;
// while the log cannot be written it tries once more and returns the
// error.
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

// Probe is for a caller about to refuse service because Err is set: it
// has the writer try the file again now (at most every ProbeInterval,
// however many callers ask) and returns the outcome, waiting at most wait.
// So service resumes as soon as space is freed, not at the next retry.
func (l *Log) Probe(wait time.Duration) error {
	if l.Err() == nil {
		return nil
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	done := make(chan error, 1)
	select {
	case l.ch <- item{flush: done, probe: true}:
	case <-t.C:
		l.mu.RUnlock()
		return l.Err()
	}
	l.mu.RUnlock()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return l.Err()
	}
}

// Close flushes and fsyncs the queue and closes the file; when forwarding,
// it then gives the forwarder a short time (2 s) to send
// what the collector will take, and never waits longer. It returns an
// error when records could not be written (the log failing to the end;
// forwarding errors are logged, not returned: the local log is the trail
// of record).
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
