package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/store"
)

// Prometheus metrics (docs/scale-out.md, Monitoring, lists them).
//
// The server makes one *prometheus.Registry and records into it from its
// front ends and wrappers: the DIMSE dispatcher's Observe hook, the
// association's admission, an HTTP middleware around the web handler, and
// a service wrapper right around the archive (metered) for the failures
// of the store. What is a level rather than an event (queues, open
// connections, free space, the audit backlog) is read when scraped
// (opsCollector). Nothing is registered globally.
//
// No label carries patient data, an AE title, a UID, a user or an
// address: every label takes one of a few fixed values, so the number of
// series is bounded whatever the traffic. The children of every vector
// are made up front, so recording is an array index and an atomic add:
// a C-STORE allocates nothing here.

// DIMSE services as labelled.
const (
	svcEcho = iota
	svcStore
	svcFind
	svcMove
	svcGet
	svcOther
	numServices
)

var serviceNames = [numServices]string{"echo", "store", "find", "move", "get", "other"}

func serviceOf(command uint16) int {
	switch command {
	case dimse.CEchoRQ:
		return svcEcho
	case dimse.CStoreRQ:
		return svcStore
	case dimse.CFindRQ:
		return svcFind
	case dimse.CMoveRQ:
		return svcMove
	case dimse.CGetRQ:
		return svcGet
	}
	return svcOther
}

// statusNames are the DIMSE status classes (PS3.7 C.1), by dimse.Category.
var statusNames = [...]string{
	dimse.CategorySuccess: "success",
	dimse.CategoryWarning: "warning",
	dimse.CategoryFailure: "failure",
	dimse.CategoryCancel:  "cancel",
	dimse.CategoryPending: "pending",
}

// Association outcomes: accepted or rejected at negotiation; an accepted
// association that ends otherwise than by a release is also counted
// aborted.
const (
	assocAccepted = iota
	assocRejected
	assocAborted
	numAssocOutcomes
)

var assocOutcomeNames = [numAssocOutcomes]string{"accepted", "rejected", "aborted"}

// HTTP route groups.
const (
	routeQIDO = iota
	routeWADO
	routeSTOW
	routeWADOURI
	routeSignIn
	routeHealth
	routeViewer
	routeOther
	numRoutes
)

var routeNames = [numRoutes]string{"qido", "wado", "stow", "wado_uri", "signin", "health", "viewer", "other"}

// routeOf is the group of a request, from its method and path alone.
func routeOf(r *http.Request) int {
	p := r.URL.Path
	switch {
	case p == "/healthz" || p == "/readyz":
		return routeHealth
	case p == "/wado":
		return routeWADOURI
	case p == "/signin" || p == "/signout" || p == "/session" || p == "/setup" || strings.HasPrefix(p, "/oidc/"):
		return routeSignIn
	case strings.HasPrefix(p, "/dicom-web/"):
		if r.Method == http.MethodPost {
			return routeSTOW
		}
		// Searches end in a collection: studies, series or instances.
		rest := strings.TrimSuffix(p, "/")
		last := rest[strings.LastIndexByte(rest, '/')+1:]
		if last == "studies" || last == "series" || last == "instances" {
			return routeQIDO
		}
		return routeWADO
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return routeViewer
	}
	return routeOther
}

var codeClassNames = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func codeClass(code int) int {
	if code < 100 || code > 599 {
		return 4 // treated as a server error
	}
	return code/100 - 1
}

// Store error operations and kinds (metered).
const (
	opStore = iota
	opQuery
	opRetrieve
	opReadObject
	numOps
)

var opNames = [numOps]string{"store", "query", "retrieve", "read_object"}

const (
	kindStorage     = iota // archive.ErrStorage: the index or the blobs failed
	kindUnavailable        // store.ErrUnavailable: the shared index or object store is out of reach
	kindNoSpace            // archive.ErrNoSpace
	kindMissing            // an object the index names is not in the blobs
	kindProcessing         // archive.ErrProcessing, or no domain error (a bug)
	numKinds
)

var kindNames = [numKinds]string{"storage", "unavailable", "no_space", "missing", "processing"}

// Readiness checks, for their failure counter.
const (
	checkIndex = iota
	checkBlobs
	checkAudit
	numChecks
)

var checkNames = [numChecks]string{"index", "blobs", "audit"}

// Buckets: C-STOREs from 1 ms to about 33 s, STOW-RS requests (often
// many objects) from 5 ms to about 5 min.
var (
	cstoreBuckets = prometheus.ExponentialBuckets(0.001, 2, 16)
	stowBuckets   = prometheus.ExponentialBuckets(0.005, 2, 16)
)

// metrics is what the server records into, with its registry.
type metrics struct {
	reg *prometheus.Registry

	assocs      [numAssocOutcomes]prometheus.Counter
	gateRefused [numGateRefusals]prometheus.Counter
	ops         [numServices][len(statusNames)]prometheus.Counter
	cstore      prometheus.Histogram
	http        [numRoutes][len(codeClassNames)]prometheus.Counter
	stow        prometheus.Histogram
	storeErrs   [numOps][numKinds]prometheus.Counter
	checkFails  [numChecks]prometheus.Counter

	webConns atomic.Int64 // open HTTP connections (ConnState)
}

// newMetrics makes the registry of s, with the Go runtime's and the
// process's collectors, build information naming the node, and the
// levels read from s when scraped.
func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	version := s.Version
	if version == "" {
		version = "dev"
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ward_build_info", Help: "Always 1: the version of Ward, the Go version it was built with, and this node's ID.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "node": s.node},
	}, func() float64 { return 1 }))

	assocs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_dicom_associations_total",
		Help: "DIMSE associations by outcome: accepted or rejected at negotiation; an accepted one that ended otherwise than by a release is also counted aborted.",
	}, []string{"outcome"})
	for i, n := range assocOutcomeNames {
		m.assocs[i] = assocs.WithLabelValues(n)
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_dicom_connections_refused_total",
		Help: "DIMSE connections refused at accept, before negotiation, by the limit that refused them (max_pending, max_pending_per_source, lockout), or closed for want of a PROXY header from a listed load balancer (proxy_header).",
	}, []string{"reason"})
	for r := gateRefusal(1); r < numGateRefusals; r++ {
		m.gateRefused[r] = refused.WithLabelValues(r.String())
	}
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_dicom_operations_total",
		Help: "DIMSE requests answered, by service and the status class of the (final) response.",
	}, []string{"service", "status"})
	for i, svc := range serviceNames {
		for j, st := range statusNames {
			m.ops[i][j] = ops.WithLabelValues(svc, st)
		}
	}
	m.cstore = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ward_dicom_store_duration_seconds",
		Help:    "C-STOREs acknowledged with success or a warning: from the arrival of the request to its response sent (the data set's transfer included).",
		Buckets: cstoreBuckets,
	})
	httpReqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_http_requests_total",
		Help: "HTTP requests on the web listener by route group and status code class.",
	}, []string{"route", "code"})
	for i, rt := range routeNames {
		for j, c := range codeClassNames {
			m.http[i][j] = httpReqs.WithLabelValues(rt, c)
		}
	}
	m.stow = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ward_http_stow_duration_seconds",
		Help:    "STOW-RS requests answered 2xx: from the arrival of the request to the end of its response (the upload included).",
		Buckets: stowBuckets,
	})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_store_errors_total",
		Help: "Failures of the index or the blob store by operation (store, query, retrieve, read_object) and kind (storage: I/O or database; unavailable: the shared index or object store out of reach; no_space: the reserve or a full disk; missing: an object the index names is not in the blobs; processing: another internal failure).",
	}, []string{"operation", "kind"})
	for i, op := range opNames {
		for j, k := range kindNames {
			m.storeErrs[i][j] = errs.WithLabelValues(op, k)
		}
	}
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_readiness_check_failures_total",
		Help: "Readiness probes (/readyz) that found the index or the blobs not answering in time, or the audit trail unwritable while it refuses service.",
	}, []string{"check"})
	for i, n := range checkNames {
		m.checkFails[i] = checks.WithLabelValues(n)
	}
	m.reg.MustRegister(assocs, refused, ops, m.cstore, httpReqs, m.stow, errs, checks, &opsCollector{s: s})
	return m
}

// observeDIMSE is the dispatcher's Observe hook.
func (m *metrics) observeDIMSE(command, status uint16, received time.Time) {
	if m == nil {
		return
	}
	svc := serviceOf(command)
	cat := dimse.CategoryOf(status)
	m.ops[svc][cat].Inc()
	if svc == svcStore && (cat == dimse.CategorySuccess || cat == dimse.CategoryWarning) {
		m.cstore.Observe(time.Since(received).Seconds())
	}
}

// association counts an association's outcome.
func (m *metrics) association(outcome int) {
	if m != nil {
		m.assocs[outcome].Inc()
	}
}

// refusedAtAccept counts a connection refused by the connection budget.
func (m *metrics) refusedAtAccept(why gateRefusal) {
	if m != nil && why > admitted && why < numGateRefusals {
		m.gateRefused[why].Inc()
	}
}

// checkFailed counts a failed readiness check.
func (m *metrics) checkFailed(check int) {
	if m != nil {
		m.checkFails[check].Inc()
	}
}

// storeError counts a failure of the store in op, when err is one (client
// errors, refusals and cancellations are not).
func (m *metrics) storeError(op int, err error) {
	if m == nil || err == nil {
		return
	}
	k := -1
	switch kind := archive.KindOf(err); {
	case errors.Is(err, store.ErrUnavailable) || kind == archive.ErrUnavailable:
		k = kindUnavailable
	case kind == archive.ErrStorage:
		k = kindStorage
	case kind == archive.ErrNoSpace:
		k = kindNoSpace
	case kind == archive.ErrProcessing:
		k = kindProcessing
	case kind != nil:
		// The requestor's error, or a refusal: not the store's.
	case errors.Is(err, store.ErrNotFound):
		k = kindMissing
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
	default:
		k = kindProcessing
	}
	if k >= 0 {
		m.storeErrs[op][k].Inc()
	}
}

// metered is the archive's service counting the store's failures
// (metrics.storeError); it wraps the archive itself, below the policy and
// the audit trail, so that refusals are not counted.
type metered struct {
	svc archive.Service
	m   *metrics
}

var _ archive.Service = metered{}

func (g metered) Echo(ctx context.Context) error { return g.svc.Echo(ctx) }

func (g metered) Store(ctx context.Context, r *archive.StoreRequest) (*archive.Stored, error) {
	st, err := g.svc.Store(ctx, r)
	if err != nil {
		g.m.storeError(opStore, err)
	}
	return st, err
}

func (g metered) Query(ctx context.Context, q *archive.Query, emit func(archive.Match) error) error {
	err := g.svc.Query(ctx, q, emit)
	if err != nil && !errors.Is(err, archive.ErrTooManyResults) {
		g.m.storeError(opQuery, err)
	}
	return err
}

func (g metered) Retrieve(ctx context.Context, r *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	err := g.svc.Retrieve(ctx, r, func(in *archive.Instance) error {
		if open := in.Open; open != nil {
			in.Open = func(ctx context.Context) (io.ReadCloser, error) {
				rc, err := open(ctx)
				if err != nil {
					g.m.storeError(opReadObject, err)
				}
				return rc, err
			}
		}
		return each(in)
	})
	if err != nil {
		g.m.storeError(opRetrieve, err)
	}
	return err
}

func (g metered) Destination(ctx context.Context, aeTitle string) (string, error) {
	return g.svc.Destination(ctx, aeTitle)
}

// instrumentHTTP counts the requests h answers by route group and code
// class, and times STOW-RS.
func (m *metrics) instrumentHTTP(h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := routeOf(r)
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		cc := codeClass(code)
		m.http[route][cc].Inc()
		if route == routeSTOW && cc == 1 {
			m.stow.Observe(time.Since(start).Seconds())
		}
	})
}

// webConnState counts the web listener's open connections
// (http.Server.ConnState).
func (m *metrics) webConnState(_ net.Conn, st http.ConnState) {
	if m == nil {
		return
	}
	switch st {
	case http.StateNew:
		m.webConns.Add(1)
	case http.StateClosed, http.StateHijacked:
		m.webConns.Add(-1)
	}
}

// statusWriter remembers the status code written; it keeps the server's
// ReadFrom (sendfile) and Flush.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, r)
}

// writerOnly hides ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// pendingDeletesCap bounds the pending blob deletions counted at a scrape.
const pendingDeletesCap = 10000

// scrapeTimeout bounds what a scrape asks the store.
const scrapeTimeout = 2 * time.Second

// opsCollector reads the levels when scraped: queues, connections, free
// space, the audit backlog, readiness.
type opsCollector struct{ s *Server }

var (
	descQueue = prometheus.NewDesc("ward_queue_depth",
		"Work waiting, by queue: after_store (stored objects to publish, and replaced ones to delete), metadata (stored objects whose DICOM JSON waits to be computed), pending_blob_deletes (blobs the index recorded for deletion; counted up to 10000), recorded_deletions (study deletions whose audit record is still due), audit_records (records waiting for the audit log's writer).",
		[]string{"queue"}, nil)
	descAuditForward = prometheus.NewDesc("ward_audit_forward_backlog_bytes",
		"Bytes of the audit log not yet accepted by the syslog collector (0 when not forwarding).", nil, nil)
	descAuditFailing = prometheus.NewDesc("ward_audit_log_failing",
		"1 while the local audit log cannot be written (patient-data services are then refused unless [audit] on_failure = \"continue\").", nil, nil)
	descFree = prometheus.NewDesc("ward_storage_free_bytes",
		"Bytes free for new objects on the blob store's storage (when the backend reports it).", nil, nil)
	descTotal = prometheus.NewDesc("ward_storage_size_bytes",
		"Size of the blob store's storage (when the backend reports it).", nil, nil)
	descReserve = prometheus.NewDesc("ward_storage_reserve_bytes",
		"The free space kept in reserve ([storage] min_free): C-STOREs are refused below it.", nil, nil)
	descConns = prometheus.NewDesc("ward_open_connections",
		"Open connections by listener: dicom (both DIMSE listeners, admitted or not), dicom_pending (not yet admitted), http.",
		[]string{"listener"}, nil)
	descAssocActive = prometheus.NewDesc("ward_dicom_associations_active",
		"DIMSE associations established and not yet ended.", nil, nil)
	descReady = prometheus.NewDesc("ward_ready",
		"1 when /readyz answers 200 (the last probe's result).", nil, nil)
	descHeld = prometheus.NewDesc("ward_blob_deletes_held",
		"1 while a backup (of any node) holds the deletion of blobs: pending_blob_deletes then grows.", nil, nil)
	descDraining = prometheus.NewDesc("ward_draining",
		"1 while the node drains after SIGTERM (/readyz answers 503).", nil, nil)
)

func (c *opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueue, descAuditForward, descAuditFailing, descFree, descTotal, descReserve, descConns, descAssocActive, descReady, descDraining, descHeld} {
		ch <- d
	}
}

func (c *opsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if s.archive != nil {
		after, meta := s.archive.Queued()
		gauge(descQueue, float64(after), "after_store")
		gauge(descQueue, float64(meta), "metadata")
	}
	if s.index != nil {
		if keys, err := s.index.PendingBlobDeletes(ctx, pendingDeletesCap); err == nil {
			gauge(descQueue, float64(len(keys)), "pending_blob_deletes")
		}
	}
	if s.store != nil {
		if dr := s.store.Caps.DeletionRecorder; dr != nil {
			if notes, err := dr.RecordedDeletions(ctx); err == nil {
				gauge(descQueue, float64(len(notes)), "recorded_deletions")
			}
		}
		if dh := s.store.Caps.DeleteHolder; dh != nil {
			if held, err := dh.DeletesHeld(ctx); err == nil {
				v := 0.0
				if held {
					v = 1
				}
				gauge(descHeld, v)
			}
		}
	}
	if s.audit != nil {
		records, fwd := s.audit.Backlog()
		gauge(descQueue, float64(records), "audit_records")
		gauge(descAuditForward, float64(fwd))
		failing := 0.0
		if s.audit.Err() != nil {
			failing = 1
		}
		gauge(descAuditFailing, failing)
	}
	if s.store != nil && s.store.Caps.SpaceReporter != nil {
		if free, total, err := s.store.Caps.SpaceReporter.Space(ctx); err == nil {
			gauge(descFree, float64(free))
			gauge(descTotal, float64(total))
			if s.archive != nil {
				gauge(descReserve, float64(archive.Reserve(s.archive.MinFree, s.archive.MinFreeShare, total)))
			}
		}
	}
	s.mu.Lock()
	conns, active := len(s.conns), len(s.active)
	s.mu.Unlock()
	gauge(descConns, float64(conns), "dicom")
	if s.gate != nil {
		pending, _ := s.gate.counts()
		gauge(descConns, float64(pending), "dicom_pending")
	}
	if s.mx != nil {
		gauge(descConns, float64(s.mx.webConns.Load()), "http")
	}
	gauge(descAssocActive, float64(active))
	ready := 0.0
	if s.readiness() == "" {
		ready = 1
	}
	gauge(descReady, ready)
	draining := 0.0
	if s.health.draining.Load() {
		draining = 1
	}
	gauge(descDraining, draining)
}
