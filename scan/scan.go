// Package scan is Ward's exposure auditor: it probes the hosts and ports
// an operator is responsible for, detects DICOM and web services, and
// proves each finding without reading patient data (docs/scan.md).
//
// Safety rules the code keeps:
//   - only endpoints in the Scope are ever connected to; HTTP redirects are
//     never followed;
//   - nothing is retrieved or stored: storage, C-GET and C-MOVE are tested
//     by presentation context acceptance (and C-MOVE with a destination and
//     identifier that match nothing);
//   - C-FIND asks for StudyInstanceUID at STUDY level only; responses are
//     counted and their data sets discarded unread; the query is cancelled
//     at a cap;
//   - every connection has a timeout, every endpoint a budget, the scan a
//     deadline; connections are rate-limited and bounded in number.
package scan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/dicom"
)

// Defaults for a zero Options.
const (
	DefaultConcurrency = 64
	DefaultTimeout     = 3 * time.Second
	DefaultFindCap     = 10000
	DefaultDeadline    = 30 * time.Minute
	// DefaultEndpointBudget bounds everything done to one address and port.
	DefaultEndpointBudget = 2 * time.Minute
)

// CommonAETitles are tried, in order, by called-AE discovery.
var CommonAETitles = []string{"ANY-SCP", "ORTHANC", "DCM4CHEE", "STORESCP", "PACS", "DCMQRSCP", "QRSCP", "ARCHIVE", "SERVER", "DICOM", "STORE_SCP", "CONQUESTSRV1", "OSIRIX", "HOROS", "WARD"}

// Options tune a scan. The zero value is usable.
type Options struct {
	// Concurrency is the number of endpoints probed at once.
	Concurrency int
	// Rate bounds new connections per second; 0 is unlimited.
	Rate float64
	// Timeout bounds each connection attempt and each wait for an answer.
	Timeout time.Duration
	// Deadline bounds the whole scan; endpoints not reached by then are
	// skipped and the report says it is incomplete.
	Deadline time.Duration
	// EndpointBudget bounds everything done to one endpoint.
	EndpointBudget time.Duration
	// FindCap is the number of C-FIND responses after which the query is
	// cancelled.
	FindCap int
	// DiscoverAET enables called-AE discovery from CommonAETitles after a
	// rejection.
	DiscoverAET bool
	// Logger receives debug lines per endpoint; nil discards.
	Logger *slog.Logger
	// Progress, when set, is called after each endpoint.
	Progress func(done, total int64)
	// Resolver resolves host names; nil is net.DefaultResolver.
	Resolver Resolver
	// Dial opens TCP connections (tests); nil uses net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	if o.EndpointBudget <= 0 {
		o.EndpointBudget = DefaultEndpointBudget
	}
	if o.FindCap <= 0 {
		o.FindCap = DefaultFindCap
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	return o
}

// Schema names the JSON report format; it changes only when a field
// changes meaning or goes away (docs/scan.md).
const Schema = "ward.scan/v1"

// Report is the result of a scan.
type Report struct {
	Schema   string    `json:"schema"`
	Tool     string    `json:"tool"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Complete is false when the deadline or a cancellation stopped the
	// scan before every endpoint was probed.
	Complete bool          `json:"complete"`
	Scope    ReportScope   `json:"scope"`
	Stats    Stats         `json:"stats"`
	Services []Service     `json:"services"`
	Findings []Finding     `json:"findings"`
	Exposure Exposure      `json:"exposure"`
	Rules    []Rule        `json:"-"`
	Duration time.Duration `json:"-"`
}

// ReportScope records what the scan was told to touch.
type ReportScope struct {
	Targets []string `json:"targets"`
	Exclude []string `json:"exclude"`
	Ports   []int    `json:"ports"`
}

// Stats counts what the scan did.
type Stats struct {
	Addresses uint64 `json:"addresses"`
	Endpoints int64  `json:"endpoints"`
	Probed    int64  `json:"probed"`
	Open      int64  `json:"open"`
}

// Service is something that answered on an open port.
type Service struct {
	Host string `json:"host"`
	// Name is the host name the address came from, if any.
	Name string `json:"name,omitempty"`
	Port int    `json:"port"`
	// Protocol is dicom, dicom-tls, http, https or unknown.
	Protocol string `json:"protocol"`
	Product  string `json:"product,omitempty"`
	Version  string `json:"version,omitempty"`
	// ImplementationClassUID and ImplementationVersionName are from the
	// A-ASSOCIATE-AC.
	ImplementationClassUID    string `json:"implementation_class_uid,omitempty"`
	ImplementationVersionName string `json:"implementation_version_name,omitempty"`
	// CalledAETitle is the title the checks used (random when any title
	// was accepted, discovered otherwise).
	CalledAETitle string `json:"called_ae_title,omitempty"`
	// Notes say what else was seen: rejections, refusals, and how a
	// hostile or broken peer behaved.
	Notes []string `json:"notes,omitempty"`
}

// SeverityCounts counts findings per severity.
type SeverityCounts struct {
	Critical int `json:"critical"`
	High     int `json:"high"`
	Medium   int `json:"medium"`
	Low      int `json:"low"`
	Info     int `json:"info"`
}

func (c *SeverityCounts) add(s Severity) {
	switch s {
	case Critical:
		c.Critical++
	case High:
		c.High++
	case Medium:
		c.Medium++
	case Low:
		c.Low++
	default:
		c.Info++
	}
}

// Get returns the count for s.
func (c SeverityCounts) Get(s Severity) int {
	return [...]int{c.Info, c.Low, c.Medium, c.High, c.Critical}[s]
}

// HostExposure sums one host's findings.
type HostExposure struct {
	Host       string         `json:"host"`
	Services   int            `json:"services"`
	Findings   SeverityCounts `json:"findings"`
	Studies    int64          `json:"studies"`
	StudiesCap bool           `json:"studies_cap_reached,omitempty"`
	Patients   int64          `json:"patients"`
}

// Exposure sums the findings.
type Exposure struct {
	Findings SeverityCounts `json:"findings"`
	// Studies is the number of studies C-FIND answered for (counted, at
	// most the cap per service); Patients the Orthanc REST patient count.
	Studies  int64          `json:"studies"`
	Patients int64          `json:"patients"`
	Hosts    []HostExposure `json:"hosts"`
}

// Max returns the highest severity found, and false when there is no
// finding.
func (r *Report) Max() (Severity, bool) {
	if len(r.Findings) == 0 {
		return Info, false
	}
	m := Info
	for _, f := range r.Findings {
		if f.Severity > m {
			m = f.Severity
		}
	}
	return m, true
}

// limiter spaces connection attempts.
type limiter struct {
	mu       sync.Mutex
	next     time.Time
	interval time.Duration
}

func newLimiter(rate float64) *limiter {
	if rate <= 0 {
		return nil
	}
	return &limiter{interval: time.Duration(float64(time.Second) / rate)}
}

func (l *limiter) wait(ctx context.Context) error {
	if l == nil {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	t := l.next
	if t.Before(now) {
		t = now
	}
	l.next = t.Add(l.interval)
	l.mu.Unlock()
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// scanner is one scan's shared state.
type scanner struct {
	opt Options
	lim *limiter
}

// dial opens a TCP connection within the rate limit and the timeout.
func (s *scanner) dial(ctx context.Context, ep Endpoint) (net.Conn, error) {
	if err := s.lim.wait(ctx); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	return s.opt.Dial(dctx, "tcp", ep.String())
}

// Run scans scope and returns the report. It ends by itself: at the
// latest when Options.Deadline has passed (the report is then marked
// incomplete). It fails only when the scope is invalid.
func Run(ctx context.Context, scope Scope, opt Options) (*Report, error) {
	opt = opt.withDefaults()
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, opt.Deadline)
	defer cancel()
	p, err := makePlan(ctx, opt.Resolver, scope)
	if err != nil {
		return nil, err
	}
	s := &scanner{opt: opt, lim: newLimiter(opt.Rate)}
	rep := &Report{Schema: Schema, Tool: "ward " + dicom.ImplementationVersionName, Started: started.UTC(), Services: []Service{}, Findings: []Finding{}}
	for _, t := range scope.Targets {
		rep.Scope.Targets = append(rep.Scope.Targets, t.Raw)
	}
	rep.Scope.Exclude = []string{}
	for _, t := range scope.Exclude {
		rep.Scope.Exclude = append(rep.Scope.Exclude, t.Raw)
	}
	rep.Scope.Ports = p.ports
	rep.Stats.Addresses = p.addrs
	total := p.count()
	rep.Stats.Endpoints = total

	jobs := make(chan Endpoint)
	var mu sync.Mutex
	var done, open atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < opt.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ep := range jobs {
				res := s.probe(ctx, ep)
				if res != nil {
					open.Add(1)
					mu.Lock()
					if res.svc != nil {
						rep.Services = append(rep.Services, *res.svc)
					}
					rep.Findings = append(rep.Findings, res.findings...)
					mu.Unlock()
				}
				n := done.Add(1)
				if opt.Progress != nil {
					opt.Progress(n, total)
				}
			}
		}()
	}
	p.endpoints(func(ep Endpoint) bool {
		select {
		case jobs <- ep:
			return true
		case <-ctx.Done():
			return false
		}
	})
	close(jobs)
	wg.Wait()
	rep.Stats.Probed = done.Load()
	rep.Stats.Open = open.Load()
	rep.Complete = ctx.Err() == nil && rep.Stats.Probed >= total
	rep.Finished = time.Now().UTC()
	rep.Duration = time.Since(started)
	rep.finish()
	return rep, nil
}

// finish sorts the report and computes the exposure.
func (r *Report) finish() {
	sort.Slice(r.Services, func(i, j int) bool {
		return endpointLess(r.Services[i].Host, r.Services[i].Port, r.Services[j].Host, r.Services[j].Port)
	})
	order := map[string]int{}
	for i, ru := range Rules {
		order[ru.ID] = i
	}
	sort.SliceStable(r.Findings, func(i, j int) bool {
		a, b := r.Findings[i], r.Findings[j]
		if a.Host != b.Host || a.Port != b.Port {
			return endpointLess(a.Host, a.Port, b.Host, b.Port)
		}
		return order[a.ID] < order[b.ID]
	})
	hosts := map[string]*HostExposure{}
	var names []string
	host := func(h string) *HostExposure {
		if e, ok := hosts[h]; ok {
			return e
		}
		e := &HostExposure{Host: h}
		hosts[h] = e
		names = append(names, h)
		return e
	}
	for _, s := range r.Services {
		host(s.Host).Services++
	}
	r.Exposure = Exposure{Hosts: []HostExposure{}}
	for _, f := range r.Findings {
		h := host(f.Host)
		h.Findings.add(f.Severity)
		r.Exposure.Findings.add(f.Severity)
		if f.Evidence.Count != nil {
			switch f.ID {
			case IDCFindOpen:
				h.Studies += *f.Evidence.Count
				h.StudiesCap = h.StudiesCap || f.Evidence.CapReached
				r.Exposure.Studies += *f.Evidence.Count
			case IDOrthancRESTOpen:
				h.Patients += *f.Evidence.Count
				r.Exposure.Patients += *f.Evidence.Count
			}
		}
	}
	sort.Slice(names, func(i, j int) bool { return endpointLess(names[i], 0, names[j], 0) })
	for _, n := range names {
		r.Exposure.Hosts = append(r.Exposure.Hosts, *hosts[n])
	}
	r.Rules = Rules
}

func endpointLess(h1 string, p1 int, h2 string, p2 int) bool {
	a1, e1 := parseAddr(h1)
	a2, e2 := parseAddr(h2)
	if e1 == nil && e2 == nil && a1 != a2 {
		return a1.Less(a2)
	}
	if h1 != h2 {
		return h1 < h2
	}
	return p1 < p2
}

// result is what one endpoint gave; nil when the port is closed.
type result struct {
	svc      *Service
	findings []Finding
}

// errNotDICOM: the answer was not a DICOM upper-layer PDU.
var errNotDICOM = errors.New("scan: not a DICOM answer")

func (r *result) note(format string, args ...any) {
	r.svc.Notes = append(r.svc.Notes, fmt.Sprintf(format, args...))
}

func (r *result) add(f Finding) { r.findings = append(r.findings, f) }
