package audit

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Fast retries and short bounds, so that the tests see several
	// reconnections in a few seconds.
	forwardRetryMin = 20 * time.Millisecond
	forwardRetryMax = 200 * time.Millisecond
	forwardDialTimeout = 2 * time.Second
	forwardWriteTimeout = time.Second
	forwardCloseTimeout = time.Second
	os.Exit(m.Run())
}

// pki is a CA made for the test and a collector certificate it signed for
// 127.0.0.1 and localhost, in PEM files.
type pki struct {
	caFile, certFile, keyFile string
	server                    *tls.Config
	pool                      *x509.CertPool // the CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ward test audit CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	writePEM(t, p.certFile, "CERTIFICATE", der)
	writePEM(t, p.keyFile, "PRIVATE KEY", keyDER)
	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	p.server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// collector is a syslog-over-TLS receiver (RFC 5425) on 127.0.0.1.
type collector struct {
	t    *testing.T
	addr string
	read bool // false: accept connections and never read them

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	msgs  []string // SYSLOG-MSGs in arrival order
	errs  []error
}

func startCollector(t *testing.T, p *pki, addr string, read bool) *collector {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port of a collector just stopped may take a moment
		if ln, err = tls.Listen("tcp", addr, p.server); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{t: t, addr: ln.Addr().String(), read: read, ln: ln, conns: map[net.Conn]bool{}}
	c.wg.Add(1)
	go c.accept()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) accept() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns[conn] = true
		c.mu.Unlock()
		if !c.read {
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			br := bufio.NewReader(conn)
			for {
				msg, err := readFrame(br)
				if err != nil {
					// A sender that dies (TestForwardSurvivesCrash) resets
					// the connection, maybe in the middle of a frame.
					if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
						c.mu.Lock()
						c.errs = append(c.errs, err)
						c.mu.Unlock()
					}
					return
				}
				c.mu.Lock()
				c.msgs = append(c.msgs, msg)
				c.mu.Unlock()
			}
		}()
	}
}

// readFrame reads "MSG-LEN SP SYSLOG-MSG", bounding MSG-LEN.
func readFrame(br *bufio.Reader) (string, error) {
	var n int
	for i := 0; ; i++ {
		b, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		if b == ' ' && i > 0 {
			break
		}
		if b < '0' || b > '9' || i >= 7 || (i == 0 && b == '0') {
			return "", fmt.Errorf("bad MSG-LEN byte %q", b)
		}
		n = n*10 + int(b-'0')
	}
	if n > 1<<20 {
		return "", fmt.Errorf("MSG-LEN %d too large", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(br, buf); err != nil {
		return "", fmt.Errorf("short frame: %w", err)
	}
	return string(buf), nil
}

// stop closes the listener and every connection (TLS close_notify, then
// the socket), and waits for the readers.
func (c *collector) stop() {
	c.ln.Close()
	c.mu.Lock()
	for conn := range c.conns {
		conn.Close()
	}
	c.conns = map[net.Conn]bool{}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *collector) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) > 0 {
		c.t.Errorf("collector: %v", c.errs)
		c.errs = nil
	}
	return append([]string(nil), c.msgs...)
}

// waitUntil polls ok for up to 20 s.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syslogMsg is an RFC 5424 message split into its fields.
type syslogMsg struct {
	pri                                   int
	version, ts, host, app, procID, msgID string
	sd, msg                               string
}

func parseSyslog(s string) (syslogMsg, error) {
	f := strings.SplitN(s, " ", 8)
	if len(f) != 8 || len(f[0]) < 4 || f[0][0] != '<' {
		return syslogMsg{}, fmt.Errorf("not an RFC 5424 message: %.80q", s)
	}
	i := strings.IndexByte(f[0], '>')
	pri, err := strconv.Atoi(f[0][1:i])
	if err != nil {
		return syslogMsg{}, err
	}
	return syslogMsg{pri: pri, version: f[0][i+1:], ts: f[1], host: f[2], app: f[3], procID: f[4], msgID: f[5], sd: f[6], msg: f[7]}, nil
}

// written returns the n of each audit message received ("n=N" in its
// EventOutcomeDescription, see writeNumbered), and the gap marks ("G" and
// the text), in arrival order; duplicates are kept.
func received(t *testing.T, msgs []string) (ns []int, gaps []string) {
	t.Helper()
	for _, s := range msgs {
		m, err := parseSyslog(s)
		if err != nil {
			t.Fatal(err)
		}
		if m.msgID == syslogGapMsgID {
			gaps = append(gaps, m.msg)
			ns = append(ns, -1)
			continue
		}
		if !strings.HasPrefix(m.msg, bom+"<AuditMessage>") {
			t.Fatalf("MSG is not BOM + AuditMessage: %.80q", m.msg)
		}
		var am Message
		if err := xml.Unmarshal([]byte(strings.TrimPrefix(m.msg, bom)), &am); err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimPrefix(am.Event.Description, "n="))
		if err != nil {
			t.Fatalf("description %q", am.Event.Description)
		}
		ns = append(ns, n)
	}
	return ns, gaps
}

// firsts drops repeats (at-least-once delivery may resend a batch).
func firsts(ns []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, n := range ns {
		if n >= 0 && seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out
}

func seqInts(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// writeNumbered writes User Authentication records n = from..to-1; odd
// ones are failures.
func writeNumbered(t *testing.T, l *Log, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := l.Write(Authentication(ward, peer, i%2 == 0, fmt.Sprintf("n=%d", i), time.Now())); err != nil {
			t.Fatal(err)
		}
	}
}

// logBuf collects a logger's output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// freeAddr is a 127.0.0.1 address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func openForwarding(t *testing.T, dir string, logger *slog.Logger, cfg ForwardConfig) *Log {
	t.Helper()
	l, err := Open(dir, logger, WithForward(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func closeLog(t *testing.T, l *Log) {
	t.Helper()
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > forwardCloseTimeout+2*time.Second {
		t.Errorf("Close took %v", d)
	}
}

func TestSyslogFrame(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("CET", 3600))
	got := string(appendFrame(nil, 85, at, "pacs1", "42", syslogMsgID, "<AuditMessage></AuditMessage>"))
	msg := "<85>1 2026-01-02T02:04:05.123456Z pacs1 ward 42 DICOM+RFC3881 - \xEF\xBB\xBF<AuditMessage></AuditMessage>"
	if want := strconv.Itoa(len(msg)) + " " + msg; got != want {
		t.Errorf("frame\n got %q\nwant %q", got, want)
	}
	for _, tt := range []struct {
		r    Record
		want int
	}{
		{Record{Event: "query", Outcome: OutcomeSuccess}, 85},
		{Record{Event: "authentication", Outcome: OutcomeMinorFailure}, 84},
		{Record{Event: "instances-transferred", Outcome: OutcomeMajorFailure}, 84},
		{Record{Event: "security-alert", Outcome: OutcomeSuccess}, 84},
	} {
		if got := syslogFacility*8 + severity(&tt.r); got != tt.want {
			t.Errorf("%s/%d: PRI %d, want %d", tt.r.Event, tt.r.Outcome, got, tt.want)
		}
	}
}

func TestForwardDelivers(t *testing.T) {
	p := newPKI(t)
	col := startCollector(t, p, "127.0.0.1:0", true)
	dir := t.TempDir()
	l := openForwarding(t, dir, nil, ForwardConfig{Addr: col.addr, CA: p.caFile})
	writeNumbered(t, l, 0, 50)
	waitUntil(t, "50 messages", func() bool { return len(col.messages()) >= 50 })
	closeLog(t, l)
	msgs := col.messages()
	ns, gaps := received(t, msgs)
	if fmt.Sprint(ns) != fmt.Sprint(seqInts(0, 50)) || len(gaps) != 0 {
		t.Fatalf("received %v, gaps %v", ns, gaps)
	}
	for i, s := range msgs {
		m, _ := parseSyslog(s)
		wantPRI := 85
		if i%2 == 1 {
			wantPRI = 84
		}
		ts, err := time.Parse(time.RFC3339Nano, m.ts)
		if m.pri != wantPRI || m.version != "1" || err != nil || !strings.HasSuffix(m.ts, "Z") || len(m.ts) != len("2006-01-02T15:04:05.000000Z") ||
			time.Since(ts) > time.Minute || m.host == "" || m.app != "ward" || m.procID != strconv.Itoa(os.Getpid()) || m.msgID != "DICOM+RFC3881" || m.sd != "-" {
			t.Errorf("message %d: %+v", i, m)
		}
	}
	if n, err := verifyDir(t, dir); n != 50 || err != nil {
		t.Fatalf("local log: %d, %v", n, err)
	}
	st, err := os.ReadFile(filepath.Join(dir, QueueDir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, FileName))
	if !strings.Contains(string(st), fmt.Sprintf(`"seq":50,"offset":%d,`, fi.Size())) {
		t.Errorf("state after everything was sent: %s", st)
	}
}

func TestForwardCollectorDownAtStart(t *testing.T) {
	p := newPKI(t)
	addr := freeAddr(t)
	logger, logs := newLogger()
	l := openForwarding(t, t.TempDir(), logger, ForwardConfig{Addr: addr, CA: p.caFile})
	defer closeLog(t, l)
	writeNumbered(t, l, 0, 20)
	waitUntil(t, "failed connection attempts", func() bool { return strings.Count(logs.String(), "collector still unreachable") >= 3 })
	if !strings.Contains(logs.String(), "collector unreachable") {
		t.Errorf("no warning:\n%s", logs)
	}
	col := startCollector(t, p, addr, true)
	writeNumbered(t, l, 20, 30)
	waitUntil(t, "30 messages", func() bool { return len(firsts(mustNs(t, col))) >= 30 })
	if ns := firsts(mustNs(t, col)); fmt.Sprint(ns) != fmt.Sprint(seqInts(0, 30)) {
		t.Fatalf("received %v", ns)
	}
	if !strings.Contains(logs.String(), "collector reachable again") {
		t.Errorf("no recovery logged:\n%s", logs)
	}
}

func mustNs(t *testing.T, c *collector) []int {
	ns, _ := received(t, c.messages())
	return ns
}

func TestForwardCollectorStopsMidStream(t *testing.T) {
	p := newPKI(t)
	col := startCollector(t, p, "127.0.0.1:0", true)
	dir := t.TempDir()
	l := openForwarding(t, dir, nil, ForwardConfig{Addr: col.addr, CA: p.caFile})
	defer closeLog(t, l)
	writeNumbered(t, l, 0, 20)
	waitUntil(t, "20 messages", func() bool { return len(col.messages()) >= 20 })
	first := col.messages()
	col.stop()
	// The forwarder notices the collector's close before its next batch.
	waitUntil(t, "the forwarder to notice", func() bool {
		c := l.fw.current()
		if c == nil {
			return true
		}
		select {
		case <-c.dead:
			return true
		default:
			return false
		}
	})
	writeNumbered(t, l, 20, 40)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few failed reconnections
	if b := l.fw.q.backlog(); b == 0 {
		t.Fatal("nothing queued while the collector is down")
	}
	col2 := startCollector(t, p, col.addr, true)
	writeNumbered(t, l, 40, 50)
	waitUntil(t, "50 messages", func() bool { return len(firsts(append(mustNs(t, col), mustNs(t, col2)...))) >= 50 })
	all, _ := received(t, append(first, col2.messages()...))
	if ns := firsts(all); fmt.Sprint(ns) != fmt.Sprint(seqInts(0, 50)) {
		t.Fatalf("received %v", all)
	}
}

func TestForwardQueueFull(t *testing.T) {
	p := newPKI(t)
	addr := freeAddr(t)
	logger, logs := newLogger()
	dir := t.TempDir()
	const max = 16 << 10
	l := openForwarding(t, dir, logger, ForwardConfig{Addr: addr, CA: p.caFile, QueueMax: max})
	defer closeLog(t, l)
	writeNumbered(t, l, 0, 100)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if b := l.fw.q.backlog(); b > max || b < max/2 {
		t.Fatalf("backlog %d bytes with QueueMax %d", b, max)
	}
	if !strings.Contains(logs.String(), "audit forwarding queue full") {
		t.Errorf("no warning:\n%s", logs)
	}
	// The local trail has everything; the forwarder's disk use is its state.
	if n, err := verifyDir(t, dir); n != 100 || err != nil {
		t.Fatalf("local log: %d, %v", n, err)
	}
	var qsize int64
	filepath.Walk(filepath.Join(dir, QueueDir), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			qsize += fi.Size()
		}
		return nil
	})
	if qsize > 4<<10 {
		t.Errorf("forward directory holds %d bytes", qsize)
	}
	col := startCollector(t, p, addr, true)
	waitUntil(t, "the gap mark", func() bool { _, gaps := received(t, col.messages()); return len(gaps) == 1 })
	writeNumbered(t, l, 100, 110) // the queue has room again
	waitUntil(t, "records after the gap", func() bool { ns := mustNs(t, col); return len(ns) > 0 && ns[len(ns)-1] == 109 })
	ns, gaps := received(t, col.messages())
	ns = firsts(ns)
	k := 0
	for k < len(ns) && ns[k] == k {
		k++
	}
	if k == 0 || k >= 100 {
		t.Fatalf("received %v", ns)
	}
	// Records are n+1 in seq: the gap is seq k+1..100.
	if want := fmt.Sprintf("audit records %d to %d (seq) were not forwarded", k+1, 100); !strings.Contains(gaps[0], want) {
		t.Errorf("gap mark %q, want %q", gaps[0], want)
	}
	if fmt.Sprint(ns[k:]) != fmt.Sprint(append([]int{-1}, seqInts(100, 110)...)) {
		t.Errorf("after the first %d: %v", k, ns[k:])
	}
	if !strings.Contains(logs.String(), "queue has room again") {
		t.Errorf("no recovery logged:\n%s", logs)
	}
}

func TestForwardQueueSurvivesRestart(t *testing.T) {
	p := newPKI(t)
	addr := freeAddr(t)
	dir := t.TempDir()
	l := openForwarding(t, dir, nil, ForwardConfig{Addr: addr, CA: p.caFile})
	writeNumbered(t, l, 0, 30)
	closeLog(t, l) // collector down: the queue is kept
	// Records the forwarder never saw (written with forwarding off, as
	// after a crash between the log's fsync and the state's save) are
	// re-derived from the log.
	l2, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeNumbered(t, l2, 30, 35)
	closeLog(t, l2)
	col := startCollector(t, p, addr, true)
	l3 := openForwarding(t, dir, nil, ForwardConfig{Addr: addr, CA: p.caFile})
	defer closeLog(t, l3)
	writeNumbered(t, l3, 35, 40)
	waitUntil(t, "40 messages", func() bool { return len(firsts(mustNs(t, col))) >= 40 })
	if ns := firsts(mustNs(t, col)); fmt.Sprint(ns) != fmt.Sprint(seqInts(0, 40)) {
		t.Fatalf("received %v", ns)
	}
}

func TestForwardStateMismatchRestartsAtEnd(t *testing.T) {
	p := newPKI(t)
	addr := freeAddr(t)
	dir := t.TempDir()
	l := openForwarding(t, dir, nil, ForwardConfig{Addr: addr, CA: p.caFile})
	writeNumbered(t, l, 0, 5)
	closeLog(t, l)
	// The log is replaced behind Ward's back.
	os.Remove(filepath.Join(dir, FileName))
	newLog(t, dir, 3)
	logger, logs := newLogger()
	col := startCollector(t, p, addr, true)
	l2 := openForwarding(t, dir, logger, ForwardConfig{Addr: addr, CA: p.caFile})
	defer closeLog(t, l2)
	writeNumbered(t, l2, 100, 102)
	waitUntil(t, "2 messages", func() bool { return len(col.messages()) >= 2 })
	if ns := firsts(mustNs(t, col)); fmt.Sprint(ns) != "[100 101]" {
		t.Fatalf("received %v", ns)
	}
	if !strings.Contains(logs.String(), "does not match the audit log") {
		t.Errorf("no warning:\n%s", logs)
	}
}

// TestForwardSlowCollectorNeverBlocksWrite: the collector accepts the
// connection and never reads; writes still return at once, and Close
// returns within its bound.
func TestForwardSlowCollectorNeverBlocksWrite(t *testing.T) {
	p := newPKI(t)
	col := startCollector(t, p, "127.0.0.1:0", false)
	dir := t.TempDir()
	l := openForwarding(t, dir, nil, ForwardConfig{Addr: col.addr, CA: p.caFile})
	ident := bytes.Repeat([]byte("x"), 8<<10)
	const n = 1200 // about 13 MB: more than the socket buffers hold
	var slowest time.Duration
	start := time.Now()
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := l.Write(Query(ward, peer, "1.2.840.10008.5.1.4.1.2.2.1", ident, "1.2.840.10008.1.2", OutcomeSuccess, time.Now())); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes in %v, slowest %v", n, time.Since(start), slowest)
	if slowest > 2*time.Second {
		t.Errorf("a Write took %v", slowest)
	}
	if l.fw.q.backlog() == 0 {
		t.Fatal("the collector took everything: it was meant not to read")
	}
	closeLog(t, l)
	if n2, err := verifyDir(t, dir); n2 != n || err != nil {
		t.Fatalf("local log: %d, %v", n2, err)
	}
}

func TestForwardConfigErrors(t *testing.T) {
	p := newPKI(t)
	for _, tt := range []struct {
		name string
		cfg  ForwardConfig
	}{
		{"no port", ForwardConfig{Addr: "127.0.0.1"}},
		{"missing CA", ForwardConfig{Addr: "127.0.0.1:6514", CA: filepath.Join(t.TempDir(), "none.pem")}},
		{"CA not PEM", ForwardConfig{Addr: "127.0.0.1:6514", CA: p.keyFile + ".x"}},
		{"cert without key", ForwardConfig{Addr: "127.0.0.1:6514", CA: p.caFile, Cert: p.certFile}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "CA not PEM" {
				os.WriteFile(tt.cfg.CA, []byte("not a certificate"), 0o600)
			}
			l, err := Open(t.TempDir(), nil, WithForward(tt.cfg))
			if err == nil {
				l.Close()
				t.Fatal("opened")
			}
		})
	}
	// No address: no forwarding, no forward directory.
	dir := t.TempDir()
	l, err := Open(dir, nil, WithForward(ForwardConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, QueueDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("forward directory made without an address: %v", err)
	}
}

// TestForwardRefusesOldTLS: a collector that offers only TLS 1.1 gets
// nothing.
func TestForwardRefusesOldTLS(t *testing.T) {
	p := newPKI(t)
	old := p.server.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	p.server = old
	col := startCollector(t, p, "127.0.0.1:0", true)
	logger, logs := newLogger()
	l := openForwarding(t, t.TempDir(), logger, ForwardConfig{Addr: col.addr, CA: p.caFile})
	defer closeLog(t, l)
	writeNumbered(t, l, 0, 3)
	waitUntil(t, "a refused handshake", func() bool { return strings.Contains(logs.String(), "collector unreachable") })
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.msgs) != 0 {
		t.Fatal("sent over TLS < 1.2")
	}
}

// TestForwardRefusesWeakSuites: a collector that offers TLS 1.2 with
// CBC cipher suites only gets nothing: forwarding uses Ward's TLS profile
// (ECDHE with AEAD ciphers).
func TestForwardRefusesWeakSuites(t *testing.T) {
	p := newPKI(t)
	weak := p.server.Clone()
	weak.MaxVersion = tls.VersionTLS12
	weak.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_CBC_SHA}
	p.server = weak
	col := startCollector(t, p, "127.0.0.1:0", true)
	logger, logs := newLogger()
	l := openForwarding(t, t.TempDir(), logger, ForwardConfig{Addr: col.addr, CA: p.caFile})
	defer closeLog(t, l)
	writeNumbered(t, l, 0, 3)
	waitUntil(t, "a refused handshake", func() bool { return strings.Contains(logs.String(), "collector unreachable") })
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.msgs) != 0 {
		t.Fatal("sent over a CBC cipher suite")
	}
}

// TestForwardClientCertificate: a collector that requires a client
// certificate gets the records when Ward has one, and none otherwise (the
// records wait in the queue; nothing is lost to a refused TLS 1.3
// connection).
func TestForwardClientCertificate(t *testing.T) {
	p := newPKI(t)
	strict := p.server.Clone()
	strict.ClientAuth, strict.ClientCAs = tls.RequireAndVerifyClientCert, p.pool
	p.server = strict
	col := startCollector(t, p, "127.0.0.1:0", true)

	logger, logs := newLogger()
	anon := openForwarding(t, t.TempDir(), logger, ForwardConfig{Addr: col.addr, CA: p.caFile})
	writeNumbered(t, anon, 0, 3)
	waitUntil(t, "a refused connection", func() bool { return strings.Count(logs.String(), "collector still unreachable") >= 2 })
	if b := anon.fw.q.backlog(); b == 0 {
		t.Error("records left the queue though the collector refused the connection")
	}
	closeLog(t, anon)
	col.mu.Lock()
	n := len(col.msgs)
	col.errs = nil // the refused handshakes
	col.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d messages accepted without a client certificate", n)
	}

	l := openForwarding(t, t.TempDir(), nil, ForwardConfig{Addr: col.addr, CA: p.caFile, Cert: p.certFile, Key: p.keyFile})
	defer closeLog(t, l)
	writeNumbered(t, l, 0, 5)
	waitUntil(t, "5 messages", func() bool { return len(col.messages()) >= 5 })
}

// TestForwardSurvivesCrash: a Ward that dies without closing its log (the
// test binary run again as a child, which exits at once after its writes)
// leaves a queue that the next start sends: nothing is missing at the
// collector, in order (a batch may come twice).
func TestForwardSurvivesCrash(t *testing.T) {
	if dir := os.Getenv("WARD_AUDIT_CRASH_DIR"); dir != "" {
		l, err := Open(dir, nil, WithForward(ForwardConfig{Addr: os.Getenv("WARD_AUDIT_CRASH_ADDR"), CA: os.Getenv("WARD_AUDIT_CRASH_CA")}))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		writeNumbered(t, l, 0, 10)
		waitUntil(t, "the first records sent", func() bool { return !l.fw.q.pending() })
		writeNumbered(t, l, 10, 20)
		if err := l.Sync(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(3) // no Close
	}
	p := newPKI(t)
	col := startCollector(t, p, "127.0.0.1:0", true)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestForwardSurvivesCrash$")
	cmd.Env = append(os.Environ(), "WARD_AUDIT_CRASH_DIR="+dir, "WARD_AUDIT_CRASH_ADDR="+col.addr, "WARD_AUDIT_CRASH_CA="+p.caFile)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	l := openForwarding(t, dir, nil, ForwardConfig{Addr: col.addr, CA: p.caFile})
	defer closeLog(t, l)
	writeNumbered(t, l, 20, 25)
	waitUntil(t, "25 messages", func() bool { return len(firsts(mustNs(t, col))) >= 25 })
	if ns := firsts(mustNs(t, col)); fmt.Sprint(ns) != fmt.Sprint(seqInts(0, 25)) {
		t.Fatalf("received %v", mustNs(t, col))
	}
	if n, err := verifyDir(t, dir); n != 25 || err != nil {
		t.Fatalf("local log: %d, %v", n, err)
	}
}
