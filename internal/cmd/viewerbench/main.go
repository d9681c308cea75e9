// Command viewerbench measures the time to first image of the OHIF
// viewer, in Chromium, side by side on Ward's DICOMweb and on another
// DICOMweb server (Orthanc with its DICOMweb plugin), for one study.
// scripts/bench-viewer.sh sets the servers up and runs it; it is a
// benchmark, not a test.
//
// Both sides serve the very same viewer: each target is an origin of its
// own, a reverse proxy in this program on a loopback port. The "ward"
// proxy passes every request to Ward (its OHIF bundle, its sign-in, its
// DICOMweb); the "orthanc" proxy passes /dicom-web/ to the other server
// and everything else to Ward as well (the same bundle, app-config.js,
// Content-Security-Policy and gzip; Ward's viewer pages need its session,
// which the browser sends to every port of 127.0.0.1). So only the
// DICOMweb server differs, and each side has one proxy hop. With
// -direct, Ward is measured on its own port as well ("ward-direct").
//
// A run: a fresh Chromium profile signs in to Ward, its HTTP cache is
// cleared, and the viewer opens /viewer?StudyInstanceUIDs=UID (cold);
// then the page is reloaded -warm times in the same profile (warm).
// -warmup rounds come first, untimed. A
// script added before the page's own records, in every animation frame,
// whether a cornerstone viewport canvas has non-black pixels: the first
// such frame, in ms from the navigation's start (performance.now), is the
// time to first image. Resource timing entries give when the series
// metadata arrived and when the last frame request ended, and how many
// frames were fetched. Targets alternate within each round.
//
// Output: one JSON line per run on -out, and a table of medians, minima
// and maxima on stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

func main() {
	wardURL := flag.String("ward", "", "Ward's web base URL (http://127.0.0.1:P)")
	otherURL := flag.String("orthanc", "", "the other server's base URL; its DICOMweb at /dicom-web/")
	study := flag.String("study", "", "StudyInstanceUID to open")
	user := flag.String("user", "", "Ward user (a viewer)")
	passFile := flag.String("passcode-file", "", "file holding the user's passcode")
	rounds := flag.Int("rounds", 5, "rounds; each has one cold run per target")
	warm := flag.Int("warm", 1, "warm reloads after each cold run")
	slices := flag.Int("slices", 300, "frames in the study: the run waits for all of them (or for no new one in -quiet)")
	quiet := flag.Duration("quiet", 8*time.Second, "stop waiting for frames after this long without a new one")
	warmup := flag.Int("warmup", 1, "untimed rounds first (Ward gzips each bundle file on its first request; the servers' caches)")
	direct := flag.Bool("direct", false, "also measure Ward on its own port, without the proxy")
	chrome := flag.String("chromium", "", "Chromium binary (default: chromium from PATH)")
	out := flag.String("out", "", "append one JSON line per run to this file")
	flag.Parse()
	if *wardURL == "" || *otherURL == "" || *study == "" || *user == "" || *passFile == "" {
		flag.Usage()
		os.Exit(2)
	}
	pass, err := os.ReadFile(*passFile)
	if err != nil {
		log.Fatal(err)
	}
	if *chrome == "" {
		if *chrome, err = exec.LookPath("chromium"); err != nil {
			log.Fatal("chromium not found: apt-get install chromium")
		}
	}
	wardU, err := url.Parse(*wardURL)
	if err != nil {
		log.Fatal(err)
	}
	otherU, err := url.Parse(*otherURL)
	if err != nil {
		log.Fatal(err)
	}
	targets := []target{
		{name: "ward", base: proxy(wardU, nil)},
		{name: "orthanc", base: proxy(wardU, otherU)},
	}
	if *direct {
		targets = append(targets, target{name: "ward-direct", base: strings.TrimSuffix(*wardURL, "/")})
	}
	var jsonOut io.Writer = io.Discard
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		jsonOut = f
	}
	b := bench{chromium: *chrome, study: *study, user: *user, passcode: strings.TrimRight(string(pass), "\r\n"),
		slices: *slices, quiet: *quiet, warm: *warm}
	for r := 0; r < *warmup; r++ {
		for _, t := range targets {
			if _, err := b.run(t); err != nil {
				log.Printf("warm-up %s: %v", t.name, err)
			}
		}
	}
	var all []result
	for r := 0; r < *rounds; r++ {
		order := make([]target, len(targets))
		for i := range targets {
			order[i] = targets[(i+r)%len(targets)] // alternate who goes first
		}
		for _, t := range order {
			res, err := b.run(t)
			if err != nil {
				log.Printf("round %d %s: %v", r+1, t.name, err)
			}
			for _, x := range res {
				x.Round = r + 1
				all = append(all, x)
				line, _ := json.Marshal(x)
				fmt.Fprintln(jsonOut, string(line))
				log.Printf("round %d %-11s %-4s first image %5.0f ms | load %5.0f, metadata %5.0f-%5.0f (%4.0f), frame 1 %5.0f-%5.0f, frames %3d, last %6.0f",
					x.Round, x.Target, x.Kind, x.FirstImage, x.Load, x.MetaStart, x.Metadata, x.MetaDur, x.FirstFrameStart, x.FirstFrame, x.Frames, x.LastFrame)
			}
		}
	}
	report(os.Stdout, targets, all)
}

type target struct{ name, base string }

// proxy serves, on a fresh loopback port, ward for everything, or other
// for /dicom-web/ when other is set. It returns the proxy's base URL.
func proxy(ward, other *url.URL) string {
	tr := &http.Transport{MaxIdleConns: 100, MaxIdleConnsPerHost: 100, IdleConnTimeout: time.Minute}
	toWard := httputil.NewSingleHostReverseProxy(ward)
	toWard.Transport, toWard.FlushInterval = tr, -1
	var toOther *httputil.ReverseProxy
	if other != nil {
		toOther = httputil.NewSingleHostReverseProxy(other)
		toOther.Transport, toOther.FlushInterval = tr, -1
		dir := toOther.Director
		toOther.Director = func(r *http.Request) {
			dir(r)
			r.Header.Del("Cookie") // Ward's session is none of its business
		}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if toOther != nil && (r.URL.Path == "/dicom-web" || strings.HasPrefix(r.URL.Path, "/dicom-web/")) {
			toOther.ServeHTTP(w, r)
			return
		}
		toWard.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String()
}

type bench struct {
	chromium, study, user, passcode string
	slices, warm                    int
	quiet                           time.Duration
}

// result is one run's figures, in ms from the navigation's start.
type result struct {
	Round      int     `json:"round"`
	Target     string  `json:"target"`
	Kind       string  `json:"kind"` // cold or warm
	FirstImage float64 `json:"first_image_ms"`
	Lit        int     `json:"lit_of_1024"`
	Load       float64 `json:"page_load_ms"` // the page's load event's end
	// The (last) series metadata request: when it started, when its
	// response ended, and its time from request to response end.
	MetaStart       float64 `json:"metadata_start_ms"`
	Metadata        float64 `json:"metadata_ms"`
	MetaDur         float64 `json:"metadata_request_ms"`
	FirstFrameStart float64 `json:"first_frame_request_ms"` // the first frame request's start
	FirstFrame      float64 `json:"first_frame_ms"`         // the first frame response's end
	Frames          int     `json:"frames"`                 // distinct frame URLs fetched
	LastFrame       float64 `json:"last_frame_ms"`
	AllFrames       bool    `json:"all_frames"`
}

// probe is added to every document before its own scripts: it times the
// first animation frame where a viewport canvas shows non-black pixels
// (the canvas scaled down to 32x32 to be read cheaply), and keeps the
// resource timing of DICOMweb requests.
const probe = `(() => {
  const r = window.__ttfi = {first: -1, lit: 0, load: -1, meta: -1, metaStart: -1, metaDur: -1, firstFrame: -1, firstFrameStart: -1, frames: 0, lastFrame: -1};
  addEventListener('load', () => setTimeout(() => {
    const n = performance.getEntriesByType('navigation')[0];
    if (n) r.load = n.loadEventEnd;
  }));
  try { performance.setResourceTimingBufferSize(10000); } catch (e) {}
  const seen = new Set();
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) {
      const u = e.name.split('?')[0];
      if (u.includes('/frames/')) {
        if (!seen.has(u)) { seen.add(u); r.frames++; }
        if (r.firstFrame < 0 || e.responseEnd < r.firstFrame) r.firstFrame = e.responseEnd;
        if (r.firstFrameStart < 0 || e.startTime < r.firstFrameStart) r.firstFrameStart = e.startTime;
        r.lastFrame = Math.max(r.lastFrame, e.responseEnd);
      } else if (u.endsWith('/metadata')) {
        if (e.responseEnd > r.meta) { r.meta = e.responseEnd; r.metaStart = e.startTime; r.metaDur = e.responseEnd - e.requestStart; }
      }
    }
  }).observe({type: 'resource', buffered: true});
  const small = document.createElement('canvas');
  small.width = small.height = 32;
  let x = null;
  const tick = () => {
    if (r.first >= 0) return;
    for (const c of document.querySelectorAll('canvas.cornerstone-canvas')) {
      if (!c.width || !c.height) continue;
      x = x || small.getContext('2d', {willReadFrequently: true});
      x.clearRect(0, 0, 32, 32);
      x.drawImage(c, 0, 0, 32, 32);
      const d = x.getImageData(0, 0, 32, 32).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] > 24 || d[i+1] > 24 || d[i+2] > 24) n++;
      if (n >= 16) { r.first = performance.now(); r.lit = n; return; }
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})()`

type probed struct {
	First           float64 `json:"first"`
	Lit             int     `json:"lit"`
	Load            float64 `json:"load"`
	Meta            float64 `json:"meta"`
	MetaStart       float64 `json:"metaStart"`
	MetaDur         float64 `json:"metaDur"`
	FirstFrame      float64 `json:"firstFrame"`
	FirstFrameStart float64 `json:"firstFrameStart"`
	Frames          int     `json:"frames"`
	LastFrame       float64 `json:"lastFrame"`
}

// run is one target's cold run and its warm reloads, in a fresh profile.
func (b *bench) run(t target) ([]result, error) {
	dir, err := os.MkdirTemp("", "viewerbench-profile-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(b.chromium),
		chromedp.UserDataDir(dir),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("enable-unsafe-swiftshader", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancelC := chromedp.NewContext(actx)
	defer cancelC()
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: probe}); err != nil {
		return nil, fmt.Errorf("chromium: %w", err)
	}
	// Sign in to Ward (through this target's origin: the cookie holds for
	// every port of 127.0.0.1), leave the viewer, and empty the cache the
	// study list filled.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = chromedp.Do(sctx,
		chromedp.Navigate(t.base+"/signin"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=user]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=user]`), b.user),
		chromedp.SendKeys(chromedp.CSS(`input[name=passcode]`), b.passcode),
		chromedp.Submit(chromedp.CSS(`input[name=passcode]`)),
	)
	if err == nil {
		err = waitFor(sctx, `!location.pathname.startsWith('/signin')`)
	}
	if err == nil {
		err = chromedp.Do(sctx, chromedp.Navigate("about:blank"))
	}
	if err == nil {
		_, err = chromedp.Call(sctx, network.ClearBrowserCache, cdp.Empty{})
	}
	cancel()
	if err != nil {
		return nil, fmt.Errorf("sign-in: %w", err)
	}
	var res []result
	for i := 0; i <= b.warm; i++ {
		kind := "cold"
		var nav chromedp.Action[chromedp.Void] = chromedp.Navigate(t.base + "/viewer?StudyInstanceUIDs=" + b.study)
		if i > 0 {
			kind, nav = "warm", chromedp.Reload()
		}
		r, err := b.measure(ctx, nav)
		r.Target, r.Kind = t.name, kind
		if err != nil {
			return res, fmt.Errorf("%s: %w", kind, err)
		}
		res = append(res, r)
	}
	return res, nil
}

// measure navigates and waits for the first image, then for every frame
// (or until none came for b.quiet).
func (b *bench) measure(ctx context.Context, nav chromedp.Action[chromedp.Void]) (result, error) {
	var r result
	nctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err := chromedp.Do(nctx, nav)
	cancel()
	if err != nil {
		return r, err
	}
	deadline := time.Now().Add(120 * time.Second)
	var p probed
	for {
		if err := b.read(ctx, &p); err != nil {
			return r, err
		}
		if p.First >= 0 {
			break
		}
		if time.Now().After(deadline) {
			return r, errors.New("no image within 120 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	last, lastChange := p.Frames, time.Now()
	for p.Frames < b.slices && time.Since(lastChange) < b.quiet && time.Now().Before(deadline.Add(60*time.Second)) {
		time.Sleep(200 * time.Millisecond)
		if err := b.read(ctx, &p); err != nil {
			return r, err
		}
		if p.Frames != last {
			last, lastChange = p.Frames, time.Now()
		}
	}
	return result{FirstImage: p.First, Lit: p.Lit, Load: p.Load, MetaStart: p.MetaStart, Metadata: p.Meta, MetaDur: p.MetaDur,
		FirstFrameStart: p.FirstFrameStart, FirstFrame: p.FirstFrame,
		Frames: p.Frames, LastFrame: p.LastFrame, AllFrames: p.Frames >= b.slices}, nil
}

func (b *bench) read(ctx context.Context, p *probed) error {
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[probed](`window.__ttfi || {first: -1}`))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

func waitFor(ctx context.Context, expr string) error {
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", expr, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// report prints, per target and kind, the median, minimum and maximum of
// each figure over the runs.
func report(w io.Writer, targets []target, all []result) {
	cols := []struct {
		name string
		get  func(result) float64
	}{
		{"first image", func(r result) float64 { return r.FirstImage }},
		{"page load", func(r result) float64 { return r.Load }},
		{"metadata end", func(r result) float64 { return r.Metadata }},
		{"metadata request", func(r result) float64 { return r.MetaDur }},
		{"first frame end", func(r result) float64 { return r.FirstFrame }},
		{"last frame end", func(r result) float64 { return r.LastFrame }},
		{"frames", func(r result) float64 { return float64(r.Frames) }},
	}
	fmt.Fprintf(w, "ms from navigation start: median (min-max)\n%-11s %-4s %4s", "target", "kind", "runs")
	for _, c := range cols {
		fmt.Fprintf(w, "  %-19s", c.name)
	}
	fmt.Fprintln(w)
	for _, kind := range []string{"cold", "warm"} {
		for _, t := range targets {
			var runs []result
			for _, r := range all {
				if r.Target == t.name && r.Kind == kind {
					runs = append(runs, r)
				}
			}
			if len(runs) == 0 {
				continue
			}
			fmt.Fprintf(w, "%-11s %-4s %4d", t.name, kind, len(runs))
			for _, c := range cols {
				v := make([]float64, len(runs))
				for i, r := range runs {
					v[i] = c.get(r)
				}
				fmt.Fprintf(w, "  %-19s", stat(v))
			}
			fmt.Fprintln(w)
		}
	}
}

func stat(v []float64) string {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return fmt.Sprintf("%.0f (%.0f-%.0f)", math.Round(med), s[0], s[n-1])
}
