package scan

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
)

// Body limits: an answer is read at most this far.
const (
	maxBody      = 1 << 20
	maxCountBody = 64 << 20
)

// dicomwebPrefixes are tried for QIDO-RS, in order.
var dicomwebPrefixes = []string{"/dicom-web", "/dicomweb", "/wado", ""}

// httpClient talks to ep only: every connection goes to ep whatever the
// URL says, no proxy is used and no redirect is followed.
func (s *scanner) httpClient(ep Endpoint, useTLS bool) *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return s.dial(ctx, ep)
		},
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: true, ServerName: ep.Name, MinVersion: tls.VersionTLS10}, //nolint:gosec // an auditor observes, it does not trust
		TLSHandshakeTimeout:    s.opt.Timeout,
		ResponseHeaderTimeout:  s.opt.Timeout,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       4 * s.opt.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (s *scanner) get(ctx context.Context, cl *http.Client, base, path, accept string, limit int64, read func(io.Reader) error) (*httpAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "ward-scan")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	a := &httpAnswer{status: resp.StatusCode, header: resp.Header}
	lr := io.LimitReader(resp.Body, limit)
	if read != nil && resp.StatusCode == http.StatusOK {
		return a, read(lr)
	}
	a.body, err = io.ReadAll(lr)
	return a, err
}

// errCountLimit: the body was larger than the limit; the count is a
// lower bound.
var errCountLimit = errors.New("scan: count stopped at the body limit")

// countArray counts the elements of a JSON array without keeping them.
func countArray(r io.Reader) (int64, error) {
	dec := json.NewDecoder(r)
	t, err := dec.Token()
	if err != nil {
		return 0, err
	}
	if d, ok := t.(json.Delim); !ok || d != '[' {
		return 0, errors.New("not a JSON array")
	}
	var n int64
	for dec.More() {
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return n, errCountLimit
			}
			return n, err
		}
		n++
	}
	return n, nil
}

var dicomJSONKey = regexp.MustCompile(`^[0-9A-Fa-f]{8}$`)

// qidoCount validates a QIDO-RS answer (an array of DICOM JSON objects)
// and returns the number of entries. Values are never kept.
func qidoCount(body []byte, contentType string) (int64, bool) {
	var arr []map[string]json.RawMessage
	if err := json.Unmarshal(body, &arr); err != nil {
		return 0, false
	}
	if len(arr) == 0 {
		return 0, strings.Contains(contentType, "dicom+json")
	}
	for k := range arr[0] {
		if !dicomJSONKey.MatchString(k) {
			return 0, false
		}
	}
	return int64(len(arr)), true
}

// probeHTTP runs the web checks.
func (s *scanner) probeHTTP(ctx context.Context, ep Endpoint, useTLS bool, r *result) {
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	base := scheme + "://" + ep.String()
	cl := s.httpClient(ep, useTLS)
	defer cl.CloseIdleConnections()
	root, err := s.get(ctx, cl, base, "/", "", maxBody, nil)
	if err != nil {
		r.note("%s GET / failed: %v", scheme, err)
		return
	}
	r.svc.Protocol = scheme
	if sv := root.header.Get("Server"); sv != "" {
		r.svc.Product = truncate(sv, 64)
	}
	if !useTLS {
		r.add(newFinding(IDHTTPNoTLS, ep, Evidence{Sent: "GET / over plain TCP", Received: fmt.Sprintf("HTTP %d", root.status), Status: fmt.Sprint(root.status)}))
	}
	s.checkOrthanc(ctx, ep, cl, base, r)
	s.checkDICOMweb(ctx, ep, cl, base, r)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// checkOrthanc asks /system and /patients without credentials.
func (s *scanner) checkOrthanc(ctx context.Context, ep Endpoint, cl *http.Client, base string, r *result) {
	sys, err := s.get(ctx, cl, base, "/system", "application/json", maxBody, nil)
	if err != nil {
		return
	}
	if sys.status == http.StatusUnauthorized || sys.status == http.StatusForbidden {
		if strings.Contains(strings.ToLower(sys.header.Get("WWW-Authenticate")), "orthanc") {
			r.svc.Product = "Orthanc"
			r.note("Orthanc REST API requires authentication (GET /system: HTTP %d)", sys.status)
		}
		return
	}
	if sys.status != http.StatusOK {
		return
	}
	var info struct {
		Version    string
		ApiVersion *int
		DicomAet   *string
	}
	if json.Unmarshal(sys.body, &info) != nil || info.Version == "" || (info.ApiVersion == nil && info.DicomAet == nil) {
		return
	}
	r.svc.Product = "Orthanc"
	r.svc.Version = truncate(info.Version, 32)
	sent := "GET /system and GET /patients without credentials"
	if _, v, ok := Product("Orthanc " + info.Version); ok {
		if f, ok := vulnFinding(ep, "Orthanc", v, "GET /system without credentials", fmt.Sprintf("Orthanc REST Version %q", info.Version)); ok {
			r.add(f)
		}
	}
	ev := Evidence{Sent: sent, Status: "200"}
	var n int64
	pat, err := s.get(ctx, cl, base, "/patients", "application/json", maxCountBody, func(rd io.Reader) error {
		var err error
		n, err = countArray(rd)
		return err
	})
	switch {
	case err != nil && !errors.Is(err, errCountLimit):
		ev.Received = fmt.Sprintf("/system: HTTP 200 (Orthanc %s); /patients: %v", info.Version, err)
	case pat.status != http.StatusOK:
		ev.Received = fmt.Sprintf("/system: HTTP 200 (Orthanc %s); /patients: HTTP %d", info.Version, pat.status)
	default:
		ev.Count = count(n)
		ev.CapReached = errors.Is(err, errCountLimit)
		ev.Received = fmt.Sprintf("/system: HTTP 200 (Orthanc %s); /patients: HTTP 200, a list of %d patient resources (counted, not kept)", info.Version, n)
	}
	r.add(newFinding(IDOrthancRESTOpen, ep, ev))
}

// checkDICOMweb asks QIDO-RS studies?limit=1 under the common prefixes.
func (s *scanner) checkDICOMweb(ctx context.Context, ep Endpoint, cl *http.Client, base string, r *result) {
	for _, p := range dicomwebPrefixes {
		path := p + "/studies?limit=1"
		a, err := s.get(ctx, cl, base, path, "application/dicom+json", maxBody, nil)
		if err != nil {
			continue
		}
		var n int64
		ok := false
		switch {
		case a.status == http.StatusOK:
			n, ok = qidoCount(a.body, a.header.Get("Content-Type"))
		case a.status == http.StatusNoContent && p != "":
			ok = true
		}
		if !ok {
			if a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
				r.note("GET %s: HTTP %d (authentication required)", path, a.status)
			}
			continue
		}
		r.add(newFinding(IDDICOMwebOpen, ep, Evidence{Sent: "GET " + path + " (Accept: application/dicom+json) without credentials", Received: fmt.Sprintf("HTTP %d with %d study entries (counted, not kept)", a.status, n), Count: count(n), Status: fmt.Sprint(a.status)}))
		return
	}
}
