package web

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/archive"
)

// httpStatus is how a domain error is answered: the status, and for a
// transient one the seconds a client should wait before trying again
// (Retry-After, RFC 9110 10.2.3; 0: no header).
type httpStatus struct {
	code       int
	retryAfter int
}

// statusOf is the one table from the archive's domain errors to HTTP
// statuses (PS3.18 8.6, 10.5.3 for STOW's failure reasons).
var statusOf = map[error]httpStatus{
	archive.ErrCannotUnderstand:   {http.StatusBadRequest, 0},
	archive.ErrDuplicate:          {http.StatusConflict, 0},
	archive.ErrAttributeMismatch:  {http.StatusConflict, 0},
	archive.ErrInvalidAttribute:   {http.StatusBadRequest, 0},
	archive.ErrInvalidIdentifier:  {http.StatusBadRequest, 0},
	archive.ErrNoSpace:            {http.StatusInsufficientStorage, 0},
	archive.ErrStorage:            {http.StatusServiceUnavailable, 0},
	archive.ErrUnavailable:        {http.StatusServiceUnavailable, unavailableRetry},
	archive.ErrNotSupported:       {http.StatusNotImplemented, 0},
	archive.ErrNotAuthorized:      {http.StatusForbidden, 0},
	archive.ErrTooManyResults:     {http.StatusOK, 0}, // the matches up to the cap, with a Warning
	archive.ErrUnknownDestination: {http.StatusBadRequest, 0},
	archive.ErrAuditUnavailable:   {http.StatusServiceUnavailable, 0},
	archive.ErrProcessing:         {http.StatusInternalServerError, 0},
}

// unavailableRetry is the Retry-After of a request refused while the
// shared index or object store is unreachable: PostgreSQL's restart or
// an S3 endpoint's failover takes seconds.
const unavailableRetry = 5

// Status is the HTTP status of an error from the archive's service: its
// kind's, 499-like cancellations as 503, anything else 500; and the
// message a client may see (the domain error's comment, never its cause).
func Status(err error) (int, string) {
	var ae *archive.Error
	if errors.As(err, &ae) {
		if st, ok := statusOf[ae.Kind]; ok {
			return st.code, ae.Comment
		}
	}
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &mb):
		return http.StatusRequestEntityTooLarge, "request body over the limit ([web] max_body)"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request cancelled"
	}
	return http.StatusInternalServerError, "internal error"
}

// retryAfter is the Retry-After of err in seconds, 0 for none.
func retryAfter(err error) int {
	var ae *archive.Error
	if errors.As(err, &ae) {
		return statusOf[ae.Kind].retryAfter
	}
	return 0
}

// Error answers r with the status of err (Status) and its message; the
// cause goes to the log, not to the client.
func (h *Handler) Error(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := Status(err)
	if code >= 500 {
		h.cfg.Logger.Warn("web request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	if secs := retryAfter(err); secs > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	Fail(w, r, code, msg)
}

// Fail answers r with code and a message: plain text, and a Warning header
// (PS3.18 8.6.3) holding the same text.
func Fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	msg = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, msg)
	hd := w.Header()
	hd.Del("Content-Length")
	hd.Del("Content-Encoding")
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	if msg != "" {
		hd.Set("Warning", `299 ward "`+strings.ReplaceAll(msg, `"`, `'`)+`"`)
	}
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(msg + "\n"))
	}
}
