package server

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/tlsprofile"
)

// Health, readiness and the metrics listener ([metrics]).
//
//   - /healthz answers 200 "ok" while the process runs.
//   - /readyz answers 200 "ready" when the node should get new work: its
//     listeners are up, it is neither draining nor stopping, the index
//     and the blobs answered a lookup within readyTimeout, and the audit
//     trail can be written (or [audit] on_failure = "continue"). Else 503
//     "not ready: WHY", WHY one of a few fixed words. The store is probed
//     at most once per readyCache, however often /readyz is asked, and
//     never by two probes at once.
//
// Both are served on the metrics listener and on the web listener, to
// anyone: they carry no patient data, no request to them authenticates,
// so none counts towards a lockout or reaches the audit trail.
//
// Drain (SIGTERM with [metrics] drain): /readyz answers 503 while the
// node goes on serving, so that the load balancer's checks move new
// connections elsewhere; then the listeners close as on any stop.
//
// The metrics listener serves /metrics (the registry of metrics.go) to
// loopback, or beyond loopback over TLS with a bearer token
// (config.Validate refuses plain HTTP there). It stops last: readiness
// says "stopping" while associations finish.

const (
	// readyTimeout bounds the store's answer to a readiness probe.
	readyTimeout = 2 * time.Second
	// readyCache is how long a probe's result is reused.
	readyCache = time.Second
	// probeKey is a SOP Instance UID and a blob key no object has.
	probeKey = "ward-readiness-probe"

	metricsReadHeaderTimeout = 5 * time.Second
	metricsIdleTimeout       = time.Minute
	metricsMaxHeaderBytes    = 8 << 10
	metricsMaxConns          = 32
	metricsMaxConnsPerSource = 8
	metricsScrapeTimeout     = 10 * time.Second
)

// health is the node's readiness state.
type health struct {
	serving  atomic.Bool // Serve's listeners are up
	webDown  atomic.Bool // the web front end could not start
	draining atomic.Bool
	stopping atomic.Bool
	// probing is set while a store probe runs.
	probing atomic.Bool

	mu     sync.Mutex // guards the cached probe below
	at     time.Time
	reason string
	logged string // the reason last logged, "" for ready
}

// metricsListener is the [metrics] listener, bound by Open.
type metricsListener struct {
	ln    net.Listener
	tls   *tls.Config // nil: plain HTTP (loopback)
	token string      // "" : /metrics needs no token
	stop  func()      // set by Serve
	warn  atomic.Int64
}

// Drain makes /readyz answer 503 from now on, while Ward goes on serving:
// the load balancer's checks take the node out of rotation. Ending
// Serve's context stops it as before.
func (s *Server) Drain() {
	if !s.health.draining.Swap(true) {
		s.Logger.Info("draining: /readyz answers 503, service goes on until the stop")
	}
}

// Ready reports whether the node is ready for new work, and if not why
// (one of a few fixed words), as /readyz answers.
func (s *Server) Ready() (bool, string) {
	why := s.readiness()
	return why == "", why
}

func (s *Server) readiness() string {
	h := &s.health
	why := ""
	switch {
	case h.draining.Load():
		why = "draining"
	case h.stopping.Load():
		why = "stopping"
	case !h.serving.Load():
		why = "starting"
	case h.webDown.Load():
		why = "web front end down"
	default:
		why = s.probeCached()
	}
	return why
}

// Serving reports whether Serve has started serving (and not yet
// stopped).
func (s *Server) Serving() bool { return s.health.serving.Load() }

// probeCached is the store's readiness: the last probe's when it is fresh,
// else a new probe's.
func (s *Server) probeCached() string {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.at.IsZero() && time.Since(h.at) < readyCache {
		return h.reason
	}
	why, detail := s.probe()
	h.at, h.reason = time.Now(), why
	if why != h.logged {
		if why == "" {
			s.Logger.Info("ready again: the store answers")
		} else {
			s.Logger.Warn("not ready", "reason", why, "err", detail)
		}
		h.logged = why
	}
	return why
}

// probe asks the index and the blobs for an object that does not exist,
// within readyTimeout, and checks the audit trail. A probe still running
// (a store that hangs) is not joined by another.
func (s *Server) probe() (why, detail string) {
	if s.audit != nil && s.Config.AuditRefuses() {
		if err := s.audit.Err(); err != nil {
			s.mx.checkFailed(checkAudit)
			return "audit log", err.Error()
		}
	}
	if !s.health.probing.CompareAndSwap(false, true) {
		s.mx.checkFailed(checkIndex)
		return "store", "an earlier probe has not returned"
	}
	type result struct {
		check       int
		why, detail string
	}
	done := make(chan result, 1)
	go func() {
		defer s.health.probing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		if _, err := s.index.Get(ctx, probeKey); err != nil && !errors.Is(err, store.ErrNotFound) {
			done <- result{checkIndex, "index", err.Error()}
			return
		}
		rc, err := s.blobs.Open(ctx, probeKey)
		if err == nil {
			rc.Close()
		} else if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalidKey) {
			done <- result{checkBlobs, "blobs", err.Error()}
			return
		}
		done <- result{check: -1}
	}()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case r := <-done:
		if r.check >= 0 {
			s.mx.checkFailed(r.check)
		}
		return r.why, r.detail
	case <-t.C:
		s.mx.checkFailed(checkIndex)
		return "store", fmt.Sprintf("no answer from the index and blobs within %s", readyTimeout)
	}
}

// healthz answers a liveness probe.
func healthz(w http.ResponseWriter, _ *http.Request) {
	probeHeaders(w)
	_, _ = io.WriteString(w, "ok\n")
}

// readyz answers a readiness probe.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	probeHeaders(w)
	if why := s.readiness(); why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready: "+why+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

func probeHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
}

// listenMetrics binds the metrics listener, unless [metrics] listen is
// off, with its certificate and token.
func (s *Server) listenMetrics() error {
	c := s.Config
	if c.Metrics.Off() {
		return nil
	}
	if cert, key := c.MetricsTLS(); cert != "" {
		kp, err := tlsprofile.LoadKeyPair(cert, key)
		if err != nil {
			return fmt.Errorf("metrics tls_cert %s / tls_key %s: %w", cert, key, err)
		}
		tc, err := tlsprofile.Server(tlsprofile.ServerOptions{Certificate: kp})
		if err != nil {
			return fmt.Errorf("metrics tls: %w", err)
		}
		tc.ClientAuth = tls.NoClientCert // the token authenticates
		s.mon.tls = tc
	}
	tok, created, err := c.ReadMetricsToken()
	if err != nil {
		return err
	}
	if created {
		s.Logger.Info("metrics token generated: /metrics beyond loopback needs it as a bearer token (give Prometheus a copy as its credentials_file)", "file", c.MetricsTokenFile())
	}
	s.mon.token = tok
	ln, err := net.Listen("tcp", c.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	s.mon.ln = ln
	return nil
}

// MetricsAddr is the metrics listener's address, nil when it is off.
func (s *Server) MetricsAddr() net.Addr {
	if s.mon.ln == nil {
		return nil
	}
	return s.mon.ln.Addr()
}

// Metrics is the server's metrics registry (tests, and a caller that
// serves it elsewhere).
func (s *Server) Metrics() http.Handler {
	return promhttp.HandlerFor(s.mx.reg, promhttp.HandlerOpts{})
}

// metricsHandler is what the metrics listener serves.
func (s *Server) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	prom := promhttp.HandlerFor(s.mx.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.Logger.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 2,
		Timeout:             metricsScrapeTimeout,
	})
	mux.Handle("GET /metrics", s.metricsAuth(prom))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if s.mon.tls != nil {
			w.Header().Set("Strict-Transport-Security", "max-age=63072000")
		}
		mux.ServeHTTP(w, r)
	})
}

// metricsAuth requires the bearer token, when there is one.
func (s *Server) metricsAuth(h http.Handler) http.Handler {
	if s.mon.token == "" {
		return h
	}
	want := []byte(s.mon.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			// A 256-bit token is not guessed: no lockout, a warning a
			// minute at most.
			if now := time.Now().Unix(); now-s.mon.warn.Load() >= 60 {
				s.mon.warn.Store(now)
				s.Logger.Warn("metrics request without the right bearer token", "remote", r.RemoteAddr)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="ward-metrics"`)
			http.Error(w, "authentication required: Authorization: Bearer TOKEN ([metrics] token_file)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// startOps starts what Serve runs beside the front ends: the metrics
// listener; the node is then ready, until ctx ends (stopping).
func (s *Server) startOps(ctx context.Context) {
	context.AfterFunc(ctx, func() { s.health.stopping.Store(true) })
	s.health.serving.Store(true)
	if s.mon.ln == nil {
		return
	}
	srv := &http.Server{
		Handler:           s.metricsHandler(),
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadHeaderTimeout,
		WriteTimeout:      metricsScrapeTimeout + 5*time.Second,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    metricsMaxHeaderBytes,
		TLSConfig:         s.mon.tls,
		ErrorLog:          slog.NewLogLogger(s.Logger.Handler(), slog.LevelDebug),
	}
	ln := limitListener(s.mon.ln, metricsMaxConns, metricsMaxConnsPerSource)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		if s.mon.tls != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Logger.Error("metrics listener stopped", "err", err.Error())
		}
	}()
	s.mon.stop = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-done
	}
}

// stopOps stops the metrics listener (before the stores close).
func (s *Server) stopOps() {
	s.health.serving.Store(false)
	if s.mon.stop != nil {
		s.mon.stop()
		s.mon.stop = nil
	} else if s.mon.ln != nil {
		s.mon.ln.Close()
	}
}

// closeListeners closes the listeners Open bound (when it fails after
// binding them).
func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.ln, s.tlsLn, s.adminLn, s.webLn, s.mon.ln} {
		if ln != nil {
			ln.Close()
		}
	}
}
