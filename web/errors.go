package web

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/ward-pacs/ward/archive"
)

// statusOf is the one table from the archive's domain errors to HTTP
// statuses (PS3.18 8.6, 10.5.3 for STOW's failure reasons).
var statusOf = map[error]int{
	archive.ErrCannotUnderstand:   http.StatusBadRequest,
	archive.ErrDuplicate:          http.StatusConflict,
	archive.ErrAttributeMismatch:  http.StatusConflict,
	archive.ErrInvalidAttribute:   http.StatusBadRequest,
	archive.ErrInvalidIdentifier:  http.StatusBadRequest,
	archive.ErrNoSpace:            http.StatusInsufficientStorage,
	archive.ErrStorage:            http.StatusServiceUnavailable,
	archive.ErrNotSupported:       http.StatusNotImplemented,
	archive.ErrNotAuthorized:      http.StatusForbidden,
	archive.ErrTooManyResults:     http.StatusOK, // the matches up to the cap, with a Warning
	archive.ErrUnknownDestination: http.StatusBadRequest,
	archive.ErrAuditUnavailable:   http.StatusServiceUnavailable,
	archive.ErrProcessing:         http.StatusInternalServerError,
}

// Status is the HTTP status of an error from the archive's service: its
// kind's, 499-like cancellations as 503, anything else 500; and the
// message a client may see (the domain error's comment, never its cause).
func Status(err error) (int, string) {
	var ae *archive.Error
	if errors.As(err, &ae) {
		if code, ok := statusOf[ae.Kind]; ok {
			return code, ae.Comment
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

// Error answers r with the status of err (Status) and its message; the
// cause goes to the log, not to the client.
func (h *Handler) Error(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := Status(err)
	if code >= 500 {
		h.cfg.Logger.Warn("web request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
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
