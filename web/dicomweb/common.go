package dicomweb

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// Helpers the handlers share: the target a path names, and multipart
// answers.

// Target is what a request path names: a study, a series in it or an
// instance in that (the UIDs present; deeper ones empty).
type Target struct {
	Study, Series, Instance string
}

// targetOf reads the {study}, {series} and {instance} path values of r;
// a value that is not a valid UID is answered 400 (ok false).
func targetOf(w http.ResponseWriter, r *http.Request) (Target, bool) {
	t := Target{Study: r.PathValue("study"), Series: r.PathValue("series"), Instance: r.PathValue("instance")}
	for _, v := range []struct{ name, uid string }{{"study", t.Study}, {"series", t.Series}, {"instance", t.Instance}} {
		if v.uid != "" && !dicom.ValidUID(v.uid) {
			web.Fail(w, r, http.StatusBadRequest, fmt.Sprintf("the %s UID in the path is not a valid UID", v.name))
			return t, false
		}
	}
	return t, true
}

// Level is the query/retrieve level the target names.
func (t Target) Level() string {
	switch {
	case t.Instance != "":
		return "IMAGE"
	case t.Series != "":
		return "SERIES"
	}
	return "STUDY"
}

// Identifier is the Study Root retrieve identifier of the target: its
// level and the unique keys down to it.
func (t Target) Identifier() *dicom.DataSet {
	ds := &dicom.DataSet{}
	ds.Set(dicom.QueryRetrieveLevel, t.Level())
	ds.Set(dicom.StudyInstanceUID, t.Study)
	if t.Series != "" {
		ds.Set(dicom.SeriesInstanceUID, t.Series)
	}
	if t.Instance != "" {
		ds.Set(dicom.SOPInstanceUID, t.Instance)
	}
	return ds
}

// RetrieveRequest is the service's request for the target's instances.
func (t Target) RetrieveRequest() *archive.RetrieveRequest {
	return &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: t.Identifier()}
}

// Multipart writes a multipart/related answer part by part (PS3.18 8.7.3,
// RFC 2387), streaming: nothing is buffered beyond the part being
// written.
type Multipart struct {
	w        io.Writer
	boundary string
	started  bool
}

// NewMultipart starts a multipart/related answer whose root type is typ
// (e.g. application/dicom, with params such as transfer-syntax added by
// the caller in extra) and writes the header with status 200; nothing is
// written to w until the first part (so that an error before it can still
// be answered with a status).
func NewMultipart(w http.ResponseWriter, typ string, extra ...string) *Multipart {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	m := &Multipart{w: w, boundary: "ward-" + hex.EncodeToString(b)}
	ct := mime.FormatMediaType("multipart/related", map[string]string{"type": typ, "boundary": m.boundary})
	for _, e := range extra {
		ct += "; " + e
	}
	w.Header().Set("Content-Type", ct)
	return m
}

// Part starts a part with the given headers (Content-Type at least) and
// returns the writer of its body, valid until the next Part or Close.
func (m *Multipart) Part(h textproto.MIMEHeader) (io.Writer, error) {
	var b strings.Builder
	if m.started {
		b.WriteString("\r\n")
	}
	m.started = true
	b.WriteString("--" + m.boundary + "\r\n")
	for k, vs := range h {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(m.w, b.String()); err != nil {
		return nil, err
	}
	return m.w, nil
}

// Started reports whether a part was written (after which errors can no
// longer change the status).
func (m *Multipart) Started() bool { return m.started }

// Close ends the multipart body.
func (m *Multipart) Close() error {
	s := "--" + m.boundary + "--\r\n"
	if m.started {
		s = "\r\n" + s
	}
	_, err := io.WriteString(m.w, s)
	return err
}

// httpError is a client error the handlers decide before anything is
// written (a bad parameter, an Accept Ward cannot serve): answerErr
// answers it with its code and message.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func failf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// answerErr answers an error decided before anything was written: an
// httpError as it says, an unreadable Accept header 400, anything else
// through the service's table.
func (s *Server) answerErr(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	switch {
	case errors.As(err, &he):
		web.Fail(w, r, he.code, he.msg)
	case errors.Is(err, ErrBadAccept):
		web.Fail(w, r, http.StatusBadRequest, err.Error())
	default:
		s.web.Error(w, r, err)
	}
}
