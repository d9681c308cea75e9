// Command webbench is the load generator of the DICOMweb benchmark
// (scripts/bench-web.sh): the same client measures every server, side by
// side, so that only the servers differ.
//
//	webbench get [flags] URL...        timed GETs (QIDO, metadata, frames)
//	webbench stow [flags] URL FILE...  STOW-RS uploads of Part 10 files
//
// get sends -n requests (the URLs in turn; -urls FILE adds one URL per
// line) from -c workers over kept-alive connections, each with the Accept
// header -accept and, with a token, "Authorization: Bearer". With -repeat R
// it sends every URL once per round, R rounds, and reports the median
// round's throughput: -repeat 3 over 500 frame URLs is three pulls of a
// 500-frame series. Every answer must be 200 and, with -expect N, hold N
// items: the elements of a JSON array (application/dicom+json) or the
// parts of a multipart body. Anything else counts as an error, and the
// first error is printed.
//
// stow posts the files as multipart/related; type="application/dicom",
// -batch files per request (0: the files of one directory, a series in
// the harness's corpora), from -c workers. A request fails unless it is
// answered 200 (202 and 409 list failed instances, which are counted);
// stow exits with status 3 when any did.
//
// Both print one line of JSON on stdout (with -label as "label"): counts,
// wall time, requests/s, items/s, MB/s (10^6 bytes of bodies read or
// sent) and latency percentiles in ms; and a line for people on stderr.
// The token comes from -token-file or $WEBBENCH_TOKEN, never from the
// command line, where other users could read it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "get":
		err = runGet(os.Args[2:])
	case "stow":
		err = runStow(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "webbench: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: webbench get [flags] URL... | webbench stow [flags] URL FILE...  (-h for flags)")
	os.Exit(2)
}

// common are the flags of both modes.
type common struct {
	token     string
	conc      int
	label     string
	timeout   time.Duration
	tokenFile string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the bearer token (else $WEBBENCH_TOKEN; none: no Authorization header)")
	fs.IntVar(&c.conc, "c", 1, "concurrent requests")
	fs.StringVar(&c.label, "label", "", "label copied into the JSON result")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "timeout of one request")
}

func (c *common) setup() error {
	c.token = os.Getenv("WEBBENCH_TOKEN")
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return err
		}
		c.token = strings.TrimSpace(string(b))
	}
	if c.conc < 1 {
		return errors.New("-c must be at least 1")
	}
	return nil
}

// client keeps one connection per worker alive; loopback only.
func (c *common) client() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{
		Timeout: c.timeout,
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			MaxIdleConns:        c.conc * 2,
			MaxIdleConnsPerHost: c.conc * 2,
			MaxConnsPerHost:     c.conc,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// checkLoopback refuses a URL whose host is not a loopback address: the
// benchmark talks to nothing else.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	h := u.Hostname()
	if h == "localhost" {
		return nil
	}
	ip := net.ParseIP(h)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: only loopback addresses (127.0.0.0/8, ::1)", raw)
	}
	return nil
}

// Result is the JSON line a run prints.
type Result struct {
	Label     string    `json:"label,omitempty"`
	Mode      string    `json:"mode"`
	Requests  int       `json:"requests"`
	Errors    int       `json:"errors"`
	FirstErr  string    `json:"first_error,omitempty"`
	Items     int64     `json:"items"`
	Failed    int64     `json:"failed_items,omitempty"`
	Bytes     int64     `json:"bytes"`
	WallS     float64   `json:"wall_s"`
	ReqPerS   float64   `json:"req_per_s"`
	ItemsPerS float64   `json:"items_per_s"`
	MBPerS    float64   `json:"mb_per_s"`
	Rounds    []float64 `json:"round_items_per_s,omitempty"`
	MinMS     float64   `json:"min_ms"`
	P50MS     float64   `json:"p50_ms"`
	P90MS     float64   `json:"p90_ms"`
	P99MS     float64   `json:"p99_ms"`
	MaxMS     float64   `json:"max_ms"`
	Conc      int       `json:"concurrency"`
}

// tally collects what the workers saw.
type tally struct {
	mu       sync.Mutex
	lat      []time.Duration
	errs     int
	firstErr string
	items    atomic.Int64
	failed   atomic.Int64
	bytes    atomic.Int64
}

func (t *tally) done(d time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lat = append(t.lat, d)
	if err != nil {
		t.errs++
		if t.firstErr == "" {
			t.firstErr = err.Error()
		}
	}
}

func (t *tally) result(mode string, c *common, wall time.Duration) *Result {
	slices.Sort(t.lat)
	ms := func(q float64) float64 {
		if len(t.lat) == 0 {
			return 0
		}
		i := int(math.Ceil(q*float64(len(t.lat)))) - 1
		i = max(0, min(i, len(t.lat)-1))
		return round3(float64(t.lat[i]) / 1e6)
	}
	s := wall.Seconds()
	r := &Result{
		Label: c.label, Mode: mode, Requests: len(t.lat), Errors: t.errs, FirstErr: t.firstErr,
		Items: t.items.Load(), Failed: t.failed.Load(), Bytes: t.bytes.Load(), WallS: round3(s),
		MinMS: ms(0), P50MS: ms(0.5), P90MS: ms(0.9), P99MS: ms(0.99), MaxMS: ms(1), Conc: c.conc,
	}
	if s > 0 {
		r.ReqPerS = round3(float64(r.Requests) / s)
		r.ItemsPerS = round3(float64(r.Items) / s)
		r.MBPerS = round3(float64(r.Bytes) / 1e6 / s)
	}
	return r
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func emit(r *Result) error {
	fmt.Fprintf(os.Stderr, "%s %s: %d requests (%d errors), %d items, %.3f s, %.1f req/s, %.1f items/s, %.1f MB/s; ms min %.2f p50 %.2f p90 %.2f p99 %.2f max %.2f\n",
		r.Label, r.Mode, r.Requests, r.Errors, r.Items, r.WallS, r.ReqPerS, r.ItemsPerS, r.MBPerS, r.MinMS, r.P50MS, r.P90MS, r.P99MS, r.MaxMS)
	if r.FirstErr != "" {
		fmt.Fprintf(os.Stderr, "%s: first error: %s\n", r.Label, r.FirstErr)
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func runGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	var c common
	c.register(fs)
	n := fs.Int("n", 0, "requests (default: each URL once, times -repeat)")
	repeat := fs.Int("repeat", 1, "rounds of every URL once; reports the median round")
	warmup := fs.Int("warmup", 0, "untimed requests first (the URLs in turn, one at a time)")
	accept := fs.String("accept", "application/dicom+json", "Accept header")
	expect := fs.Int("expect", -1, "items each answer must hold (-1: any)")
	urlFile := fs.String("urls", "", "file with one URL per line (added to the arguments)")
	fs.Parse(args)
	if err := c.setup(); err != nil {
		return err
	}
	urls := fs.Args()
	if *urlFile != "" {
		f, err := os.Open(*urlFile)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				urls = append(urls, l)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	}
	if len(urls) == 0 {
		return errors.New("get: no URL")
	}
	for _, u := range urls {
		if err := checkLoopback(u); err != nil {
			return err
		}
	}
	if *repeat < 1 {
		return errors.New("-repeat must be at least 1")
	}
	cl := c.client()
	ctx := context.Background()
	var discard tally
	for i := 0; i < *warmup; i++ {
		get(ctx, cl, &c, urls[i%len(urls)], *accept, *expect, &discard)
	}
	total := *n
	if total == 0 {
		total = len(urls)
	}
	var t tally
	var rounds []float64
	start := time.Now()
	for r := 0; r < *repeat; r++ {
		before := t.items.Load()
		rs := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < c.conc; w++ {
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(total) {
						return
					}
					get(ctx, cl, &c, urls[i%int64(len(urls))], *accept, *expect, &t)
				}
			})
		}
		wg.Wait()
		if el := time.Since(rs).Seconds(); el > 0 {
			rounds = append(rounds, round3(float64(t.items.Load()-before)/el))
		}
	}
	res := t.result("get", &c, time.Since(start))
	if *repeat > 1 {
		res.Rounds = rounds
		s := slices.Clone(rounds)
		slices.Sort(s)
		// the median round stands for the run
		res.ItemsPerS = s[len(s)/2]
	}
	return emit(res)
}

// get sends one GET and counts what it answers.
func get(ctx context.Context, cl *http.Client, c *common, u, accept string, expect int, t *tally) {
	start := time.Now()
	var lat time.Duration
	err := func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", accept)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		// The whole answer is read first: the latency is to its last byte,
		// and the client's own parsing (counting) is not in it.
		var body bytes.Buffer
		if resp.ContentLength > 0 && resp.ContentLength < maxBody {
			body.Grow(int(resp.ContentLength))
		}
		_, err = body.ReadFrom(io.LimitReader(resp.Body, maxBody))
		lat = time.Since(start)
		t.bytes.Add(int64(body.Len()))
		if err != nil {
			return fmt.Errorf("GET %s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			msg := body.String()
			if len(msg) > 300 {
				msg = msg[:300]
			}
			return fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(msg))
		}
		items, err := countItems(resp.Header.Get("Content-Type"), &body)
		if err != nil {
			return fmt.Errorf("GET %s: %w", u, err)
		}
		t.items.Add(int64(items))
		if expect >= 0 && items != expect {
			return fmt.Errorf("GET %s: %d items, want %d", u, items, expect)
		}
		return nil
	}()
	if lat == 0 {
		lat = time.Since(start)
	}
	t.done(lat, err)
}

// maxBody bounds one answer held in memory.
const maxBody = 4 << 30

// countItems counts a JSON array's elements or a multipart body's parts;
// any other body is one item.
func countItems(ctype string, r io.Reader) (int, error) {
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return 0, fmt.Errorf("Content-Type %q: %w", ctype, err)
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		mr := multipart.NewReader(r, params["boundary"])
		n := 0
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, fmt.Errorf("part %d: %w", n+1, err)
			}
			if _, err := io.Copy(io.Discard, p); err != nil {
				return n, fmt.Errorf("part %d: %w", n+1, err)
			}
			n++
		}
	case strings.HasSuffix(mt, "json"):
		b, err := io.ReadAll(r)
		if err != nil {
			return 0, err
		}
		return countJSONArray(b)
	}
	return 1, nil
}

func runStow(args []string) error {
	fs := flag.NewFlagSet("stow", flag.ExitOnError)
	var c common
	c.register(fs)
	batch := fs.Int("batch", 0, "instances per request (0: the files of one directory)")
	list := fs.String("list", "", "file with one Part 10 file path per line (added to the arguments)")
	fs.Parse(args)
	if err := c.setup(); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return errors.New("stow: give the STOW URL (…/dicom-web/studies)")
	}
	u := fs.Arg(0)
	if err := checkLoopback(u); err != nil {
		return err
	}
	files := fs.Args()[1:]
	if *list != "" {
		b, err := os.ReadFile(*list)
		if err != nil {
			return err
		}
		for l := range strings.Lines(string(b)) {
			if l = strings.TrimSpace(l); l != "" {
				files = append(files, l)
			}
		}
	}
	if len(files) == 0 {
		return errors.New("stow: no file")
	}
	var batches [][]string
	for i := 0; i < len(files); {
		j := i + 1
		for j < len(files) {
			if *batch > 0 && j-i >= *batch {
				break
			}
			if *batch <= 0 && filepath.Dir(files[j]) != filepath.Dir(files[i]) {
				break
			}
			j++
		}
		batches = append(batches, files[i:j])
		i = j
	}
	cl := c.client()
	ctx := context.Background()
	var t tally
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c.conc; w++ {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(batches)) {
					return
				}
				s := time.Now()
				err := stow(ctx, cl, &c, u, batches[i], &t)
				t.done(time.Since(s), err)
			}
		})
	}
	wg.Wait()
	res := t.result("stow", &c, time.Since(start))
	if err := emit(res); err != nil {
		return err
	}
	if res.Errors > 0 {
		os.Exit(3) // the harness must not count a failed upload as ingest
	}
	return nil
}

// stow posts one multipart/related request of files, streamed from disk
// with a Content-Length (not every server takes a chunked request body).
func stow(ctx context.Context, cl *http.Client, c *common, u string, files []string, t *tally) error {
	const boundary = "webbench-4f1c2a9e7d3b"
	var readers []io.Reader
	var length int64
	var size int64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		defer fh.Close()
		st, err := fh.Stat()
		if err != nil {
			return err
		}
		head := "--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n"
		readers = append(readers, strings.NewReader(head), fh, strings.NewReader("\r\n"))
		length += int64(len(head)) + st.Size() + 2
		size += st.Size()
	}
	tail := "--" + boundary + "--\r\n"
	readers = append(readers, strings.NewReader(tail))
	length += int64(len(tail))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, io.MultiReader(readers...))
	if err != nil {
		return err
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", `multipart/related; type="application/dicom"; boundary=`+boundary)
	req.Header.Set("Accept", "application/dicom+json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	failed := failedCount(body)
	t.failed.Add(int64(failed))
	switch resp.StatusCode {
	case http.StatusOK:
		t.items.Add(int64(len(files) - failed))
		t.bytes.Add(size)
		if failed > 0 {
			return fmt.Errorf("POST %s: 200 with %d failed instances", u, failed)
		}
		return nil
	case http.StatusAccepted:
		t.items.Add(int64(len(files) - failed))
		t.bytes.Add(size)
	}
	msg := string(body)
	if len(msg) > 300 {
		msg = msg[:300]
	}
	return fmt.Errorf("POST %s (%d files): %s: %s", u, len(files), resp.Status, strings.TrimSpace(msg))
}

// countJSONArray counts the elements of a top-level JSON array by scanning
// its bytes (strings and nesting followed, nothing decoded), so that a
// large answer costs the client little; an object is one item, an empty
// body none. It checks only that the brackets balance.
func countJSONArray(b []byte) (int, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return 0, nil // no matches (Orthanc answers an empty body, PS3.18 a 204)
	}
	if b[0] != '[' {
		return 1, nil
	}
	n, depth, inStr, esc, any := 0, 0, false, false, false
	for _, ch := range b {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case ch == '\\':
				esc = true
			case ch == '"':
				inStr = false
			}
			continue
		case ch == '"':
			inStr = true
		case ch == '[' || ch == '{':
			depth++
		case ch == ']' || ch == '}':
			depth--
		case ch == ',' && depth == 1:
			n++
			continue
		}
		if depth >= 1 && !(depth == 1 && ch == '[') && ch != ' ' && ch != '\n' && ch != '\r' && ch != '\t' {
			any = true
		}
	}
	if depth != 0 || inStr {
		return n, errors.New("truncated JSON")
	}
	if any {
		n++
	}
	return n, nil
}

// failedCount reads the Failed SOP Sequence (0008,1198) of a STOW-RS
// answer in the DICOM JSON model.
func failedCount(body []byte) int {
	var ds map[string]struct {
		Value []json.RawMessage `json:"Value"`
	}
	if json.Unmarshal(bytes.TrimSpace(body), &ds) != nil {
		return 0
	}
	return len(ds["00081198"].Value)
}
