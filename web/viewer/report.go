package viewer

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// CSP violation reports (report-uri): anonymous, since a browser sends
// them without credentials, so bounded: a small body, and at most
// reportBurst logged per reportWindow (the rest are counted and dropped).
// URIs are logged without their query (a viewer's URL names studies).
const (
	maxReport    = 8 << 10
	reportBurst  = 20
	reportWindow = time.Minute
)

type reporter struct {
	log     *slog.Logger
	mu      sync.Mutex
	start   time.Time
	n       int
	dropped int
}

func newReporter(log *slog.Logger) *reporter { return &reporter{log: log} }

func (rp *reporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReport+1))
	w.WriteHeader(http.StatusNoContent)
	if err != nil || len(body) > maxReport {
		return
	}
	var rep struct {
		R struct {
			Document   string `json:"document-uri"`
			Violated   string `json:"violated-directive"`
			Effective  string `json:"effective-directive"`
			Blocked    string `json:"blocked-uri"`
			SourceFile string `json:"source-file"`
			Line       int    `json:"line-number"`
		} `json:"csp-report"`
	}
	if json.Unmarshal(body, &rep) != nil || rep.R.Violated == "" && rep.R.Effective == "" {
		return
	}
	if !rp.allow() {
		return
	}
	directive := rep.R.Effective
	if directive == "" {
		directive = rep.R.Violated
	}
	rp.log.Warn("viewer CSP violation: the browser refused part of the viewer",
		"directive", clip(directive), "blocked", withoutQuery(rep.R.Blocked), "document", withoutQuery(rep.R.Document),
		"source", withoutQuery(rep.R.SourceFile), "line", rep.R.Line, "remote", r.RemoteAddr)
}

// allow reports whether another report may be logged in this window.
func (rp *reporter) allow() bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	now := time.Now()
	if now.Sub(rp.start) >= reportWindow {
		if rp.dropped > 0 {
			rp.log.Warn("viewer CSP violations not logged (too many)", "dropped", rp.dropped)
		}
		rp.start, rp.n, rp.dropped = now, 0, 0
	}
	if rp.n >= reportBurst {
		rp.dropped++
		return false
	}
	rp.n++
	return true
}

// withoutQuery is a URI without its query and fragment, bounded.
func withoutQuery(s string) string {
	if u, err := url.Parse(s); err == nil {
		u.RawQuery, u.Fragment, u.User = "", "", nil
		s = u.String()
	}
	return clip(s)
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
