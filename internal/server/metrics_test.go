package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/store"
)

// get fetches url and returns the status and body.
func get(t *testing.T, url, bearer string) (int, string) {
	t.Helper()
	rq, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		rq.Header.Set("Authorization", "Bearer "+bearer)
	}
	rs, err := http.DefaultClient.Do(rq)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Body.Close()
	b, _ := io.ReadAll(rs.Body)
	return rs.StatusCode, string(b)
}

// metricValue is the value of one series (name and labels as exposed,
// e.g. `x_total{a="b"}`) in a text exposition, and whether it is there.
func metricValue(body, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func storeClient(t *testing.T, addr, aet string) *dimse.Client {
	t.Helper()
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: aet, ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID}}}}
	a, err := assoc.Dial(context.Background(), "tcp", addr, assoc.Config{AETitle: aet, ARTIMTimeout: 10 * time.Second}, rq)
	if err != nil {
		t.Fatal(err)
	}
	return dimse.NewClient(a)
}

// TestMetricsCount: after a C-ECHO, C-STOREs (one refused as a
// duplicate), an association rejected, an HTTP request without
// credentials and a readiness probe, the metrics listener's /metrics
// shows each counted in its series, the C-STORE histogram moved, and the
// levels (queues, space, connections, build information with the node
// ID) are there. No label names an AE title, a UID or a patient.
func TestMetricsCount(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.DICOM.LoopbackAnyAE = true
		c.Storage.OnDuplicate = "reject"
	}, nil)
	base := "http://" + s.MetricsAddr().String()
	if err := echo(t.Context(), s.Addr().String(), "ECHOER", nil); err != nil {
		t.Fatal(err)
	}
	ct := newSyntheticCT(t, 1024)
	cl := storeClient(t, s.Addr().String(), "MODALITY7")
	for _, n := range []int{1, 2, 2} {
		obj, uid := ct.instance(n)
		if _, err := cl.Store(t.Context(), 1, ctImageStorage, uid, bytes.NewReader(obj)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.A.Release(); err != nil {
		t.Fatal(err)
	}
	// Called by another AE title: rejected.
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "NOTWARD", CallingAETitle: "ECHOER", ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}}}
	if _, err := assoc.Dial(t.Context(), "tcp", s.Addr().String(), assoc.Config{AETitle: "ECHOER", ARTIMTimeout: 10 * time.Second}, rq); err == nil {
		t.Fatal("an association called to another AE title was accepted")
	}
	web := "http://" + s.WebAddr().String()
	if code, _ := get(t, web+"/dicom-web/studies?PatientID=BENCH-1", ""); code != 401 {
		t.Fatalf("QIDO without credentials: %d", code)
	}
	if code, body := get(t, web+"/readyz", ""); code != 200 || body != "ready\n" {
		t.Fatalf("web /readyz: %d %q", code, body)
	}

	want := map[string]float64{
		`ward_dicom_operations_total{service="echo",status="success"}`:  1,
		`ward_dicom_operations_total{service="store",status="success"}`: 2,
		`ward_dicom_operations_total{service="store",status="failure"}`: 1,
		`ward_dicom_store_duration_seconds_count`:                       2,
		`ward_dicom_associations_total{outcome="accepted"}`:             2,
		`ward_dicom_associations_total{outcome="rejected"}`:             1,
		`ward_http_requests_total{code="4xx",route="qido"}`:             1,
		`ward_http_requests_total{code="2xx",route="health"}`:           1,
		`ward_store_errors_total{kind="storage",operation="store"}`:     0,
	}
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var code int
		code, body = get(t, base+"/metrics", "")
		if code != 200 {
			t.Fatalf("/metrics: %d %s", code, body)
		}
		missing := ""
		for series, v := range want {
			if got, ok := metricValue(body, series); !ok || got != v {
				missing = series + " = " + strconv.FormatFloat(got, 'g', -1, 64)
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, want %v:\n%s", missing, want, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, series := range []string{
		`ward_build_info{goversion="` + runtime.Version() + `",node="` + s.node + `",version="dev"}`,
		`ward_queue_depth{queue="after_store"}`, `ward_queue_depth{queue="metadata"}`,
		`ward_queue_depth{queue="pending_blob_deletes"}`, `ward_queue_depth{queue="audit_records"}`,
		`ward_queue_depth{queue="recorded_deletions"}`, `ward_blob_deletes_held`,
		`ward_audit_forward_backlog_bytes`, `ward_audit_log_failing`,
		`ward_storage_free_bytes`, `ward_storage_reserve_bytes`,
		`ward_open_connections{listener="dicom"}`, `ward_open_connections{listener="http"}`,
		`ward_dicom_associations_active`, `ward_ready`, `ward_draining`,
		`go_goroutines`, `process_open_fds`,
	} {
		if _, ok := metricValue(body, series); !ok {
			t.Errorf("no %s", series)
		}
	}
	if v, _ := metricValue(body, "ward_ready"); v != 1 {
		t.Errorf("ward_ready %v", v)
	}
	for _, private := range []string{"ECHOER", "MODALITY7", "NOTWARD", "BENCH", uidPrefix, "127.0.0.1"} {
		if strings.Contains(body, private) {
			t.Errorf("/metrics names %q", private)
		}
	}
}

// TestObserveDIMSEAllocs: counting a C-STORE allocates nothing.
func TestObserveDIMSEAllocs(t *testing.T) {
	s := &Server{Config: config.Default(), node: "n1"}
	m := newMetrics(s)
	received := time.Now()
	if n := testing.AllocsPerRun(1000, func() {
		m.observeDIMSE(dimse.CStoreRQ, dimse.StatusSuccess, received)
		m.association(assocAccepted)
	}); n != 0 {
		t.Errorf("%v allocations per C-STORE counted", n)
	}
}

// flakyIndex is the index with Get failing or hanging on demand: the
// readiness probe's lookup.
type flakyIndex struct {
	store.Index
	fail atomic.Bool
	hang atomic.Bool
}

func (f *flakyIndex) Get(ctx context.Context, uid string) (*store.Instance, error) {
	if f.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.fail.Load() {
		return nil, errors.New("connection refused")
	}
	return f.Index.Get(ctx, uid)
}

// waitReady polls url's /readyz until it answers code, for 10 s.
func waitReady(t *testing.T, url string, code int, body string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, b := get(t, url+"/readyz", "")
		if got == code && b == body {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz: %d %q, want %d %q", url, got, b, code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReadyzStore: /readyz answers 503 on both listeners while the index
// fails or does not answer within the deadline (the answer comes within
// it still), and 200 again once it answers; /healthz stays 200. The
// failures are counted.
func TestReadyzStore(t *testing.T) {
	var flaky *flakyIndex
	s, _ := testServer(t, func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" }, func(s *Server) {
		flaky = &flakyIndex{Index: s.index}
		s.index = flaky
	})
	mon, web := "http://"+s.MetricsAddr().String(), "http://"+s.WebAddr().String()
	waitReady(t, mon, 200, "ready\n")
	waitReady(t, web, 200, "ready\n")
	flaky.fail.Store(true)
	waitReady(t, mon, 503, "not ready: index\n")
	waitReady(t, web, 503, "not ready: index\n")
	for _, u := range []string{mon, web} {
		if code, body := get(t, u+"/healthz", ""); code != 200 || body != "ok\n" {
			t.Errorf("%s/healthz while not ready: %d %q", u, code, body)
		}
	}
	flaky.fail.Store(false)
	waitReady(t, mon, 200, "ready\n")
	flaky.hang.Store(true)
	time.Sleep(readyCache)
	start := time.Now()
	code, body := get(t, mon+"/readyz", "")
	if took := time.Since(start); code != 503 || body != "not ready: store\n" || took > readyTimeout+time.Second {
		t.Errorf("/readyz with an index that does not answer: %d %q after %s", code, body, took)
	}
	flaky.hang.Store(false)
	waitReady(t, mon, 200, "ready\n")
	_, metrics := get(t, mon+"/metrics", "")
	if v, _ := metricValue(metrics, `ward_readiness_check_failures_total{check="index"}`); v < 2 {
		t.Errorf("index check failures counted %v, want at least 2", v)
	}
}

// TestReadyzDrain: once draining, /readyz answers 503 on both listeners
// while associations are still accepted; when Serve's context ends it
// answers "stopping" until the metrics listener closes.
func TestReadyzDrain(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.DICOM.LoopbackAnyAE = true
	}, nil)
	mon, web := "http://"+s.MetricsAddr().String(), "http://"+s.WebAddr().String()
	waitReady(t, mon, 200, "ready\n")
	s.Drain()
	for _, u := range []string{mon, web} {
		if code, body := get(t, u+"/readyz", ""); code != 503 || body != "not ready: draining\n" {
			t.Errorf("%s/readyz draining: %d %q", u, code, body)
		}
	}
	if err := echo(t.Context(), s.Addr().String(), "ECHOER", nil); err != nil {
		t.Errorf("C-ECHO while draining: %v", err)
	}
	_, metrics := get(t, mon+"/metrics", "")
	if v, _ := metricValue(metrics, "ward_draining"); v != 1 {
		t.Errorf("ward_draining %v", v)
	}
}

// TestReadyzStopping: after Serve's context ends, while an association
// is still in progress, the metrics listener answers /readyz with 503
// "stopping" (the DIMSE and web listeners are closed by then).
func TestReadyzStopping(t *testing.T) {
	c := config.Default()
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.DICOM.Listen, c.Web.Listen, c.Metrics.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	c.Storage.MinFree = "16MiB"
	c.DICOM.LoopbackAnyAE = true
	s := &Server{Config: c, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	mon := "http://" + s.MetricsAddr().String()
	waitReady(t, mon, 200, "ready\n")
	cl := storeClient(t, s.Addr().String(), "MODALITY7")
	cancel()
	waitReady(t, mon, 503, "not ready: stopping\n")
	cl.A.Release()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ward did not stop")
	}
}

// TestMetricsToken: with a token file, /metrics needs the token (also on
// loopback); /healthz and /readyz never do, and a wrong token counts
// towards no lockout.
func TestMetricsToken(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "metrics.token")
	const tok = "a-metrics-token-0123456789"
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := testServer(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.Metrics.TokenFile = tokFile
		c.DICOM.LockoutAfter = 2
	}, nil)
	mon := "http://" + s.MetricsAddr().String()
	for range 5 {
		if code, _ := get(t, mon+"/metrics", "wrong-token-0123456789"); code != 401 {
			t.Fatalf("/metrics with a wrong token: %d", code)
		}
	}
	if code, _ := get(t, mon+"/metrics", ""); code != 401 {
		t.Fatalf("/metrics without a token: %d", code)
	}
	if code, body := get(t, mon+"/metrics", tok); code != 200 || !strings.Contains(body, "ward_build_info") {
		t.Fatalf("/metrics with the token: %d", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, mon+p, ""); code != 200 {
			t.Errorf("%s without a token: %d", p, code)
		}
	}
	if _, locked := s.limits.Locked(netip.MustParseAddr("127.0.0.1")); locked {
		t.Error("wrong metrics tokens locked loopback out")
	}
}

// TestLogsNameNode: every JSON log record of a start, a C-ECHO and a
// stop carries the node ID, the risky-setting warnings at start
// included.
func TestLogsNameNode(t *testing.T) {
	var buf syncBuffer
	c := config.Default()
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.DICOM.Listen, c.Web.Listen = "127.0.0.1:0", "127.0.0.1:0"
	c.Storage.MinFree = "16MiB"
	c.DICOM.LoopbackAnyAE = true // a risky setting: logged at start
	c.NodeID = "node-a"
	s := &Server{Config: c, Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	if err := echo(t.Context(), s.Addr().String(), "ECHOER", nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	risky := false
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		if rec["node"] != "node-a" {
			t.Errorf("no node in %s", l)
		}
		risky = risky || rec["msg"] == "risky setting"
	}
	if !risky || len(lines) < 4 {
		t.Errorf("%d records, a risky setting among them: %v", len(lines), risky)
	}
}

// TestProbesNotAudited: /healthz and /readyz, asked many times on both
// listeners, with and without a (wrong) bearer token, reach neither the
// audit trail nor the lockout: the only record is Ward's start.
func TestProbesNotAudited(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.DICOM.LockoutAfter = 2
	}, nil)
	for _, base := range []string{"http://" + s.MetricsAddr().String(), "http://" + s.WebAddr().String()} {
		for range 10 {
			for _, p := range []string{"/healthz", "/readyz"} {
				for _, bearer := range []string{"", "not-a-token"} {
					if code, _ := get(t, base+p, bearer); code != 200 {
						t.Fatalf("%s%s: %d", base, p, code)
					}
				}
			}
		}
	}
	if _, locked := s.limits.Locked(netip.MustParseAddr("127.0.0.1")); locked {
		t.Error("probes locked loopback out")
	}
	if err := s.audit.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.audit.Path())
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	_ = audit.Each(bytes.NewReader(b), func(r *audit.Record) error { events = append(events, r.Event); return nil })
	if len(events) != 1 || events[0] != "application-activity" {
		t.Errorf("audit records after the probes: %v, want Ward's start only", events)
	}
}

// TestOpenRefusesPlainMetrics: ward serve does not start with a plain
// HTTP metrics listener beyond loopback.
func TestOpenRefusesPlainMetrics(t *testing.T) {
	c := config.Default()
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.Metrics.Listen = "0.0.0.0:0"
	s := &Server{Config: c}
	if err := s.Open(t.Context()); !errors.Is(err, config.ErrMetricsPlaintext) {
		t.Fatalf("Open: %v, want ErrMetricsPlaintext", err)
	}
}

// TestStoreErrorKinds: the store's failures are counted by kind; the
// requestor's errors, refusals and cancellations are not.
func TestStoreErrorKinds(t *testing.T) {
	m := newMetrics(&Server{Config: config.Default(), node: "n1"})
	unavailable := fmt.Errorf("postgres: %w", store.ErrUnavailable)
	for _, err := range []error{
		&archive.Error{Kind: archive.ErrStorage, Err: errors.New("i/o error")},
		&archive.Error{Kind: archive.ErrStorage, Err: unavailable},
		archive.Fail(archive.ErrNoSpace, "disk nearly full"),
		fmt.Errorf("fsblob: open k: %w", store.ErrNotFound),
		errors.New("a bug"),
		// Not the store's:
		archive.Fail(archive.ErrNotAuthorized, "no"),
		archive.Fail(archive.ErrCannotUnderstand, "bad data set"),
		archive.Fail(archive.ErrDuplicate, "again"),
		context.Canceled,
	} {
		m.storeError(opStore, err)
	}
	want := map[int]float64{kindStorage: 1, kindUnavailable: 1, kindNoSpace: 1, kindMissing: 1, kindProcessing: 1}
	for k := range numKinds {
		var d dto.Metric
		if err := m.storeErrs[opStore][k].Write(&d); err != nil {
			t.Fatal(err)
		}
		if got := d.GetCounter().GetValue(); got != want[k] {
			t.Errorf("kind %s: %v, want %v", kindNames[k], got, want[k])
		}
	}
}

// TestMetricsAssociationAborted: an association the peer aborts is
// counted aborted (besides accepted); one released is not.
func TestMetricsAssociationAborted(t *testing.T) {
	s, _ := testServer(t, func(c *config.Config) {
		c.Metrics.Listen = "127.0.0.1:0"
		c.DICOM.LoopbackAnyAE = true
	}, nil)
	if err := echo(t.Context(), s.Addr().String(), "ECHOER", nil); err != nil {
		t.Fatal(err)
	}
	cl := storeClient(t, s.Addr().String(), "MODALITY7")
	cl.A.Abort()
	base := "http://" + s.MetricsAddr().String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, base+"/metrics", "")
		acc, _ := metricValue(body, `ward_dicom_associations_total{outcome="accepted"}`)
		ab, _ := metricValue(body, `ward_dicom_associations_total{outcome="aborted"}`)
		if acc == 2 && ab == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("accepted %v, aborted %v; want 2 and 1", acc, ab)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
