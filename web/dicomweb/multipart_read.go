package dicomweb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
)

// Reading a multipart/related request body (RFC 2387, PS3.18 8.6.1.2):
// the media type's parameters are read leniently, as DICOMweb clients
// write them (Orthanc's sends type=application/dicom unquoted, which
// mime.ParseMediaType refuses for its "/"); the parts stream through
// mime/multipart, which hands out each body as a reader. Bounds: what
// mime/multipart reads between two bodies (a delimiter, a part's header;
// the preamble before the first) is held to maxPartHeader bytes beyond
// what was buffered already, far below its own 10 MiB; the number of
// parts to a maximum; the whole body to the web layer's limit.

// maxPartHeader bounds the bytes read for one part's header.
const maxPartHeader = 64 << 10

// partBufSize is the buffer a body is read through.
const partBufSize = 64 << 10

// maxContentTypeParams bounds the parameters read from a Content-Type.
const maxContentTypeParams = 32

// errContentType: a Content-Type header that cannot be read.
var errContentType = errors.New("malformed Content-Type")

// parseContentType reads a Content-Type value into its media type (lower
// case) and parameters (names lower case; values unquoted). A value is a
// quoted string or anything up to the next ';' (so that type=a/b and
// boundary=----=_Part_1 read as sent).
func parseContentType(v string) (string, map[string]string, error) {
	items := splitQuoted(v, ';')
	typ := strings.ToLower(strings.TrimSpace(items[0]))
	major, minor, _ := strings.Cut(typ, "/")
	if major == "" || minor == "" || strings.Contains(minor, "/") || strings.ContainsAny(typ, " \t\"=,") {
		return "", nil, errContentType
	}
	params := map[string]string{}
	for _, it := range items[1:] {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		if len(params) == maxContentTypeParams {
			return "", nil, errContentType
		}
		name, val, ok := strings.Cut(it, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		val = strings.TrimSpace(val)
		if !ok || name == "" {
			return "", nil, errContentType
		}
		if strings.HasPrefix(val, `"`) {
			u, ok := unquote(val)
			if !ok {
				return "", nil, errContentType
			}
			val = u
		}
		if _, dup := params[name]; dup {
			return "", nil, errContentType
		}
		params[name] = val
	}
	return typ, params, nil
}

// unquote reads an RFC 9110 quoted-string that is the whole of s.
func unquote(s string) (string, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		switch c {
		case '\\':
			i++
			if i == len(s)-1 {
				return "", false
			}
			b.WriteByte(s[i])
		case '"':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// validBoundary reports whether b is an RFC 2046 5.1.1 boundary: 1 to 70
// characters of its set, not ending in a space.
func validBoundary(b string) bool {
	if len(b) == 0 || len(b) > 70 || b[len(b)-1] == ' ' {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("'()+_,-./:=? ", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// partReader reads the parts of a multipart body, at most max of them.
type partReader struct {
	mr    *multipart.Reader
	lim   *headerLimiter
	prev  *multipart.Part
	max   int
	count int
}

// headerLimiter is the body as mime/multipart reads it: while on, at
// most budget more bytes.
type headerLimiter struct {
	r      io.Reader
	on     bool
	budget int
}

func (h *headerLimiter) Read(p []byte) (int, error) {
	if !h.on {
		return h.r.Read(p)
	}
	if h.budget <= 0 {
		return 0, errPartHeader
	}
	if len(p) > h.budget {
		p = p[:h.budget]
	}
	n, err := h.r.Read(p)
	h.budget -= n
	return n, err
}

// Errors of partReader.Next.
var (
	// errTooManyParts: a body with more parts than the reader allows.
	errTooManyParts = errors.New("too many parts")
	// errMalformedBody: the body is not multipart with the boundary
	// given, or ends before its closing delimiter.
	errMalformedBody = errors.New("malformed multipart body")
	// errPartHeader: a part's header (or the preamble) is over
	// maxPartHeader.
	errPartHeader = fmt.Errorf("a part header over %d bytes", maxPartHeader)
)

// newPartReader reads body as multipart with boundary (valid, see
// validBoundary), at most max parts.
func newPartReader(body io.Reader, boundary string, max int) *partReader {
	// mime/multipart buffers 4 KiB unless given a larger bufio.Reader,
	// whose size it then scans parts in: 64 KiB reads keep a large
	// object's copy to a few system calls per megabyte.
	lim := &headerLimiter{r: body}
	return &partReader{mr: multipart.NewReader(bufio.NewReaderSize(lim, partBufSize), boundary), lim: lim, max: max}
}

// Next returns the next part (its body unread, undecoded: DICOM parts are
// binary), io.EOF (itself, unwrapped) after the closing delimiter,
// errTooManyParts past the bound, or the error that ends the body early
// (a malformed or truncated one, the body limit's).
func (p *partReader) Next() (*multipart.Part, error) {
	var err error
	if p.prev != nil {
		// The rest of the previous body, unbounded but for the body
		// limit, before the header's bound applies.
		_, err = io.Copy(io.Discard, p.prev)
		p.prev = nil
	}
	var part *multipart.Part
	if err == nil {
		p.lim.on, p.lim.budget = true, maxPartHeader
		part, err = p.mr.NextRawPart()
		p.lim.on = false
	}
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", errMalformedBody, err)
	}
	if p.count == p.max {
		return nil, errTooManyParts
	}
	p.count++
	p.prev = part
	return part, nil
}
