package audit

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ward-pacs/ward/tlsprofile"
)

// Forwarding to a collector: PS3.15 A.6 (Audit Trail Message Transmission
// Profile - SYSLOG-TLS), that is RFC 5424 messages framed by octet counting
// (RFC 5425 §4.3, "MSG-LEN SP SYSLOG-MSG") over TLS 1.2 or later.
//
// Each record of the local log becomes one message:
//
//	<PRI>1 TIMESTAMP HOSTNAME ward PROCID DICOM+RFC3881 - BOM<AuditMessage>...
//
//   - PRI: facility 10, security/authorization, as A.6 asks (not 13, log
//     audit). Severity 5 (notice, "normal but significant") for a success,
//     4 (warning) for any failure outcome and for every Security Alert
//     (110113): A.6 says most messages should be 5 and allows 4 where the
//     audit message warrants it; nothing is sent above 4, so that a
//     collector's paging rules are not tripped by a refused association.
//     So PRI is <85> or <84>.
//   - TIMESTAMP: the event's time (EventDateTime), UTC, microseconds.
//   - HOSTNAME: the host's name (os.Hostname), "-" when unknown.
//   - APP-NAME "ward"; PROCID the process ID of the sending Ward.
//   - MSGID "DICOM+RFC3881", the value A.6 gives for messages in the A.5
//     format; the event itself is in the XML (EventID).
//   - STRUCTURED-DATA "-" (none is generated or processed).
//   - MSG: a UTF-8 BOM then the XML AuditMessage, as stored in the log.
//     A.6 has collectors take messages of 32768 octets at least; a Query
//     with a large identifier may be longer, so set the collector's
//     maximum (rsyslog: maxMessageSize) to 64k or more.
//
// One more kind of message marks a gap (see queue.go): MSGID
// "WARD-GAP", severity 4, MSG the text naming the records not forwarded.
//
// With ForwardConfig.Checkpoints, checkpoints anchor the local chain
// outside the machine: MSGID "WARD-CHECKPOINT", severity 5, MSG
//
//	audit chain head seq=N hash=H
//
// naming the last record sent and its hash (the MAC of a keyed record).
// One follows a batch when the last was sent checkpointEvery ago or more;
// otherwise it is sent once the stream has been quiet for that long (and
// at Close), so the collector's latest checkpoint is never more than about
// checkpointEvery behind the records it holds. `ward audit verify
// --checkpoints` checks the log against them: a record rewritten even with
// the key, or records cut from the end of the log, no longer match.
//
// Delivery is at least once: a record leaves the queue only after the
// message was written to the TLS connection without error. A connection
// that breaks during a batch is re-opened and the whole batch is sent
// again, so a collector may receive the last batch twice (a duplicate is
// the same message again: same TIMESTAMP, same XML).
// RFC 5425 has no acknowledgement: messages written to a connection whose
// collector dies before reading them are lost for the collector (they stay
// in the local log); a connection the collector closed is noticed by a
// reader goroutine before the next batch.
//
// The collector being down never slows the DIMSE path: Log.Write only
// queues to the log's writer, which appends and fsyncs the local log and
// then admits the records to the forwarding queue (an in-memory update, no
// I/O); one goroutine per Log does all the network work, reconnecting with
// exponential back-off (forwardRetryMin doubling to forwardRetryMax, with
// jitter).

// Tuning of the forwarder, read when a Log is opened (tests shorten them).
var (
	clientCertWait      = 250 * time.Millisecond
	forwardRetryMin     = time.Second
	forwardRetryMax     = time.Minute
	forwardDialTimeout  = 10 * time.Second
	forwardWriteTimeout = 30 * time.Second // without progress, per write
	forwardCloseTimeout = 2 * time.Second  // Close's bound on sending
	checkpointEvery     = time.Second      // see WARD-CHECKPOINT above
)

// DefaultForwardQueueMax bounds the forwarding backlog when
// ForwardConfig.QueueMax is 0.
const DefaultForwardQueueMax = 64 << 20

// forwardBatchBytes bounds one batch (records are read from the log and
// written to the connection, then the queue state is saved).
const forwardBatchBytes = 1 << 20

// Syslog fields (see above).
const (
	syslogFacility   = 10
	severityNotice   = 5
	severityWarning  = 4
	syslogAppName    = "ward"
	syslogMsgID      = "DICOM+RFC3881"
	syslogGapMsgID   = "WARD-GAP"
	syslogCPMsgID    = "WARD-CHECKPOINT"
	syslogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"
	bom              = "\xEF\xBB\xBF"
)

// ForwardConfig says where and how to forward records ([audit] syslog*).
type ForwardConfig struct {
	// Addr is the collector, HOST:PORT.
	Addr string
	// CA is a PEM file of the certificates that may sign the collector's;
	// empty: the system's roots. The collector's certificate must name the
	// host of Addr.
	CA string
	// Cert and Key are PEM files of Ward's client certificate, for
	// collectors that require one; both or neither.
	Cert, Key string
	// QueueMax bounds the records waiting for the collector, in bytes of
	// the local log (0: DefaultForwardQueueMax).
	QueueMax int64
	// Checkpoints sends the chain's head to the collector (WARD-CHECKPOINT,
	// above) after the records.
	Checkpoints bool
	// Node names the node whose chain the checkpoints are of (" node=ID"
	// after the hash), so that the checkpoints of a cluster's nodes, sent
	// to one collector, are told apart; empty: none named.
	Node string
}

// tlsConfig builds the client's TLS configuration, of Ward's TLS profile
// (package tlsprofile): TLS 1.2 or later with its cipher suites, the
// collector's certificate verified against CA for the host of Addr.
func (c ForwardConfig) tlsConfig() (*tls.Config, error) {
	host, err := tlsprofile.ServerName(c.Addr)
	if err != nil {
		return nil, fmt.Errorf("audit: syslog address %q: %w", c.Addr, err)
	}
	o := tlsprofile.ClientOptions{ServerName: host}
	if c.CA != "" {
		if o.RootCAs, err = tlsprofile.LoadCAs(c.CA); err != nil {
			return nil, fmt.Errorf("audit: syslog CA: %w", err)
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("audit: syslog client certificate: set both the certificate and the key, or neither")
	}
	if c.Cert != "" {
		cert, err := tlsprofile.LoadKeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("audit: syslog client certificate: %w", err)
		}
		o.Certificate = &cert
	}
	return tlsprofile.Client(o), nil
}

// forwarder sends the queue (queue.go) to the collector.
type forwarder struct {
	q      *queue
	addr   string
	tls    *tls.Config
	logger *slog.Logger
	host   string
	procID string

	retryMin, retryMax, dialTimeout, writeTimeout, closeTimeout time.Duration

	wake chan struct{} // cap 1: records were admitted
	quit chan struct{} // closed by close
	done chan struct{} // closed when run returns

	connMu sync.Mutex
	conn   *conn // the current connection, for close to break a write

	// checkpoints (sender goroutine only)
	checkpoints bool
	cpNode      string // named in each checkpoint (ForwardConfig.Node)
	cpEvery     time.Duration
	cpSeq       uint64 // the last record sent, not yet in a checkpoint when cpDue
	cpHash      string
	cpDue       bool
	cpLast      time.Time
}

func newForwarder(dir, logPath string, cfg ForwardConfig, logger *slog.Logger, logEnd int64, logSeq uint64, logHash string) (*forwarder, error) {
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	qmax := cfg.QueueMax
	if qmax <= 0 {
		qmax = DefaultForwardQueueMax
	}
	f := &forwarder{
		addr: cfg.Addr, tls: tc, logger: logger,
		host: syslogHostname(), procID: strconv.Itoa(os.Getpid()),
		retryMin: forwardRetryMin, retryMax: forwardRetryMax, dialTimeout: forwardDialTimeout,
		writeTimeout: forwardWriteTimeout, closeTimeout: forwardCloseTimeout,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
		checkpoints: cfg.Checkpoints, cpNode: cfg.Node, cpEvery: checkpointEvery,
	}
	f.q, err = openQueue(dir, logPath, qmax, logger, logEnd, logSeq, logHash, f.signal)
	if err != nil {
		return nil, err
	}
	go f.run()
	return f, nil
}

// admit is called by the log's writer for each fsynced record.
func (f *forwarder) admit(from, to int64, seq uint64) { f.q.admit(from, to, seq) }

func (f *forwarder) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// close stops the forwarder: it sends what it can within closeTimeout,
// saves the queue's state, and returns in about closeTimeout at most.
func (f *forwarder) close() {
	close(f.quit)
	select {
	case <-f.done:
	case <-time.After(f.closeTimeout + time.Second):
		if c := f.current(); c != nil {
			c.raw.Close() // breaks a write the deadline did not
		}
		<-f.done
	}
	f.q.close()
}

// conn is one connection to the collector.
type conn struct {
	tc   *tls.Conn
	raw  net.Conn
	bw   *bufio.Writer
	dead chan struct{} // closed when the collector closed the connection
}

func (f *forwarder) run() {
	defer close(f.done)
	var c *conn
	defer func() {
		if c != nil {
			f.hangUp(c, true)
		}
	}()
	delay := f.retryMin
	failures := 0
	var drainBy time.Time // set when closing
	for {
		closing := !drainBy.IsZero()
		if !closing {
			select {
			case <-f.quit:
				drainBy = time.Now().Add(f.closeTimeout)
				closing = true
			default:
			}
		}
		if !f.q.pending() {
			if f.cpDue && c != nil && (closing || time.Since(f.cpLast) >= f.cpEvery) {
				if err := f.sendCheckpoint(c, drainBy); err != nil {
					f.logger.Warn("audit forwarding: connection lost sending a checkpoint", "collector", f.addr, "err", err.Error())
					f.hangUp(c, false)
					c = nil
				}
				continue
			}
			if closing {
				return
			}
			var due <-chan time.Time
			var timer *time.Timer
			if f.cpDue && c != nil {
				timer = time.NewTimer(f.cpEvery - time.Since(f.cpLast))
				due = timer.C
			}
			select {
			case <-f.wake:
			case <-due:
			case <-f.quit:
				drainBy = time.Now().Add(f.closeTimeout)
			}
			if timer != nil {
				timer.Stop()
			}
			continue
		}
		if c == nil {
			if closing {
				return // no new connection while closing: the queue is kept for the next start
			}
			var err error
			c, err = f.dial()
			if err != nil {
				failures++
				if failures == 1 {
					f.logger.Warn("audit forwarding: collector unreachable; records wait in the local log and are sent when it is back",
						"collector", f.addr, "err", err.Error())
				} else {
					f.logger.Debug("audit forwarding: collector still unreachable", "collector", f.addr, "attempt", failures, "err", err.Error())
				}
				if !f.sleep(jitter(delay)) {
					drainBy = time.Now().Add(f.closeTimeout)
				}
				delay = min(2*delay, f.retryMax)
				continue
			}
			if failures > 0 {
				f.logger.Info("audit forwarding: collector reachable again", "collector", f.addr, "after_attempts", failures)
			}
			failures = 0
		}
		if err := f.sendBatch(c, drainBy); err != nil {
			f.logger.Warn("audit forwarding: connection lost; the batch will be sent again", "collector", f.addr, "err", err.Error())
			f.hangUp(c, false)
			c = nil
			if closing {
				return
			}
			// The back-off grows until a batch goes through: a collector
			// that accepts connections and drops them is not hammered.
			if !f.sleep(jitter(delay)) {
				drainBy = time.Now().Add(f.closeTimeout)
			}
			delay = min(2*delay, f.retryMax)
			continue
		}
		delay = f.retryMin
	}
}

// sleep waits d; false when close was called meanwhile.
func (f *forwarder) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.quit:
		return false
	}
}

// jitter spreads d by ±20% so that many Wards do not reconnect together.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

func (f *forwarder) dial() (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), f.dialTimeout)
	defer cancel()
	go func() {
		select {
		case <-f.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, f.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	// With TLS 1.3 a collector checks the client certificate (or its
	// absence) after the client's handshake is over: a refusal is an alert
	// that only a read sees. Wait for it briefly rather than write the
	// first batch into a connection about to be refused.
	tc.SetReadDeadline(time.Now().Add(clientCertWait))
	var one [1]byte
	_, err = tc.Read(one[:])
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		raw.Close()
		if err == nil {
			err = errors.New("the collector sent data")
		}
		return nil, fmt.Errorf("the collector closed the connection after the handshake (does it require a client certificate?): %w", err)
	}
	tc.SetReadDeadline(time.Time{})
	c := &conn{tc: tc, raw: raw, dead: make(chan struct{})}
	c.bw = bufio.NewWriterSize(progressWriter{tc, f.writeTimeout}, 64<<10)
	// The collector sends nothing (RFC 5425); reading notices when it
	// closes the connection, so that the next batch is not written into a
	// connection that is gone.
	go func() {
		io.Copy(io.Discard, tc)
		close(c.dead)
		raw.Close() // a write now fails instead of going nowhere
	}()
	f.connMu.Lock()
	f.conn = c
	f.connMu.Unlock()
	return c, nil
}

// current is the connection in use, nil when none.
func (f *forwarder) current() *conn {
	f.connMu.Lock()
	defer f.connMu.Unlock()
	return f.conn
}

// hangUp closes c: with a TLS close_notify when the connection was
// healthy, else at once.
func (f *forwarder) hangUp(c *conn, healthy bool) {
	f.connMu.Lock()
	f.conn = nil
	f.connMu.Unlock()
	if healthy {
		c.tc.SetWriteDeadline(time.Now().Add(time.Second))
		c.tc.Close()
	}
	c.raw.Close()
}

// progressWriter gives every write its own deadline: a collector that
// reads slowly is waited for, one that stops reading is given up on.
type progressWriter struct {
	c *tls.Conn
	d time.Duration
}

func (w progressWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.d))
	return w.c.Write(p)
}

// errClosedByCollector: the collector closed the connection.
var errClosedByCollector = errors.New("the collector closed the connection")

// sendBatch sends the next batch of the queue (or the gap mark at its
// head) and removes it from the queue once written. drainBy, when set,
// bounds the write (Close is waiting).
func (f *forwarder) sendBatch(c *conn, drainBy time.Time) error {
	select {
	case <-c.dead:
		return errClosedByCollector
	default:
	}
	b, err := f.q.next(forwardBatchBytes)
	if err != nil {
		return err
	}
	if b == nil {
		return nil
	}
	if !drainBy.IsZero() {
		c.tc.SetWriteDeadline(drainBy)
		c.bw.Reset(c.tc) // no per-write extension past drainBy
	}
	var frame []byte
	if b.gap != nil {
		frame = f.gapFrame(frame, b.gap)
		if _, err := c.bw.Write(frame); err != nil {
			return err
		}
	}
	for _, r := range b.records {
		frame = f.frame(frame[:0], r)
		if _, err := c.bw.Write(frame); err != nil {
			return err
		}
	}
	cpSent := false
	if f.checkpoints && len(b.records) > 0 && b.hash != "" {
		f.cpSeq, f.cpHash, f.cpDue = b.seq, b.hash, true
		if time.Since(f.cpLast) >= f.cpEvery {
			frame = f.checkpointFrame(frame[:0])
			if _, err := c.bw.Write(frame); err != nil {
				return err
			}
			cpSent = true
		}
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	if cpSent {
		f.cpDue, f.cpLast = false, time.Now()
	}
	if b.gap != nil {
		f.logger.Warn("audit forwarding: gap marked at the collector", "first_seq", b.gap.First, "last_seq", b.gap.Last)
	}
	return f.q.sent(b)
}

// severity of a record's message (see the package comment above).
func severity(r *Record) int {
	if r.Outcome != OutcomeSuccess || r.Event == "security-alert" {
		return severityWarning
	}
	return severityNotice
}

// frame appends the RFC 5425 frame of r's RFC 5424 message to b.
func (f *forwarder) frame(b []byte, r *Record) []byte {
	return appendFrame(b, syslogFacility*8+severity(r), r.Time, f.host, f.procID, syslogMsgID, r.XML)
}

// sendCheckpoint sends the checkpoint that is due on its own.
func (f *forwarder) sendCheckpoint(c *conn, drainBy time.Time) error {
	select {
	case <-c.dead:
		return errClosedByCollector
	default:
	}
	if !drainBy.IsZero() {
		c.tc.SetWriteDeadline(drainBy)
		c.bw.Reset(c.tc)
	}
	if _, err := c.bw.Write(f.checkpointFrame(nil)); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	f.cpDue, f.cpLast = false, time.Now()
	return nil
}

// checkpointFrame appends the frame of a checkpoint naming cpSeq, cpHash.
func (f *forwarder) checkpointFrame(b []byte) []byte {
	text := fmt.Sprintf("audit chain head seq=%d hash=%s", f.cpSeq, f.cpHash)
	if f.cpNode != "" {
		text += " node=" + f.cpNode
	}
	return appendFrame(b, syslogFacility*8+severityNotice, time.Now(), f.host, f.procID, syslogCPMsgID, text)
}

// ParseCheckpoint finds a checkpoint ("seq=N hash=H", then " node=ID"
// when the sender named its node, after WARD-CHECKPOINT) in a line of a
// collector's file; ok is false when the line has none.
func ParseCheckpoint(line string) (c Checkpoint, ok bool) {
	i := strings.Index(line, syslogCPMsgID)
	if i < 0 {
		return c, false
	}
	rest := line[i+len(syslogCPMsgID):]
	j := strings.Index(rest, "seq=")
	if j < 0 {
		return c, false
	}
	var seq uint64
	var hash string
	if n, err := fmt.Sscanf(rest[j:], "seq=%d hash=%64s", &seq, &hash); n != 2 || err != nil || len(hash) != 64 || seq == 0 {
		return c, false
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return c, false
	}
	c = Checkpoint{Seq: seq, Hash: hash}
	if k := strings.Index(rest[j:], " node="); k >= 0 {
		node := rest[j+k+len(" node="):]
		if e := strings.IndexAny(node, " \t\r\n"); e >= 0 {
			node = node[:e]
		}
		c.Node = node
	}
	return c, true
}

func (f *forwarder) gapFrame(b []byte, g *gap) []byte {
	text := fmt.Sprintf("audit records %d to %d (seq) were not forwarded: the forwarding queue was full; they are in Ward's local audit log", g.First, g.Last)
	return appendFrame(b, syslogFacility*8+severityWarning, time.Now(), f.host, f.procID, syslogGapMsgID, text)
}

// appendFrame appends "MSG-LEN SP SYSLOG-MSG" for one message.
func appendFrame(b []byte, pri int, t time.Time, host, procID, msgID, msg string) []byte {
	head := "<" + strconv.Itoa(pri) + ">1 " + t.UTC().Format(syslogTimeFormat) + " " + host + " " + syslogAppName + " " + procID + " " + msgID + " - " + bom
	b = strconv.AppendInt(b, int64(len(head)+len(msg)), 10)
	b = append(b, ' ')
	b = append(b, head...)
	return append(b, msg...)
}

// syslogHostname is the HOSTNAME field: printable US-ASCII, at most 255
// octets, "-" when unknown.
func syslogHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" || len(h) > 255 {
		return "-"
	}
	for i := 0; i < len(h); i++ {
		if h[i] < 33 || h[i] > 126 {
			return "-"
		}
	}
	return h
}

// parseRecord decodes one log line for sending.
func parseRecord(line []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
