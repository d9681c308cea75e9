package web

import (
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Responses with a JSON content type (application/json,
// application/dicom+json, any +json) are gzip-compressed, streaming,
// when the request's Accept-Encoding allows gzip; they carry
// Vary: Accept-Encoding either way. Nothing else is: multipart bodies
// (DICOM objects, frames, mostly compressed already) and images go as
// they are, and a handler that set its own Content-Encoding is left
// alone.

var gzipPool = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // the level is valid
	return zw
}}

// acceptsGzip reports whether an Accept-Encoding header allows gzip
// (RFC 9110 12.5.3): gzip or x-gzip or * with a weight above 0.
func acceptsGzip(headers []string) bool {
	star := false
	for _, h := range headers {
		for _, item := range strings.Split(h, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(item), ";")
			name = strings.ToLower(strings.TrimSpace(name))
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
					if err != nil {
						f = 0
					}
					q = f
				}
			}
			switch name {
			case "gzip", "x-gzip":
				return q > 0
			case "*":
				star = q > 0
			}
		}
	}
	return star
}

// compressible reports whether a Content-Type is JSON.
func compressible(ct string) bool {
	typ, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return typ == "application/json" || strings.HasSuffix(typ, "+json")
}

// gzipWriter compresses the response if, when its header is written, its
// Content-Type is JSON.
type gzipWriter struct {
	http.ResponseWriter
	accept      bool
	head        bool
	wroteHeader bool
	zw          *gzip.Writer
}

func (g *gzipWriter) WriteHeader(code int) {
	if g.wroteHeader {
		g.ResponseWriter.WriteHeader(code)
		return
	}
	g.wroteHeader = true
	hd := g.Header()
	if compressible(hd.Get("Content-Type")) && hd.Get("Content-Encoding") == "" {
		hd.Add("Vary", "Accept-Encoding")
		if g.accept && code != http.StatusNoContent && code != http.StatusNotModified && code >= 200 {
			hd.Del("Content-Length")
			hd.Set("Content-Encoding", "gzip")
			if !g.head {
				zw := gzipPool.Get().(*gzip.Writer)
				zw.Reset(g.ResponseWriter)
				g.zw = zw
			}
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipWriter) Write(b []byte) (int, error) {
	if !g.wroteHeader {
		if g.Header().Get("Content-Type") == "" {
			g.Header().Set("Content-Type", http.DetectContentType(b))
		}
		g.WriteHeader(http.StatusOK)
	}
	if g.zw != nil {
		return g.zw.Write(b)
	}
	return g.ResponseWriter.Write(b)
}

// ReadFrom keeps the server's own ReadFrom (sendfile for files) for
// answers that are not compressed: objects and frames streamed by WADO.
func (g *gzipWriter) ReadFrom(r io.Reader) (int64, error) {
	if !g.wroteHeader {
		g.WriteHeader(http.StatusOK)
	}
	if rf, ok := g.ResponseWriter.(io.ReaderFrom); ok && g.zw == nil {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{g}, r)
}

// writerOnly hides ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// Flush sends what is compressed so far.
func (g *gzipWriter) Flush() {
	if g.zw != nil {
		_ = g.zw.Flush()
	}
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

// close ends the gzip stream (its trailer) and returns the writer to the
// pool.
func (g *gzipWriter) close() {
	if g.zw == nil {
		return
	}
	_ = g.zw.Close()
	g.zw.Reset(io.Discard)
	gzipPool.Put(g.zw)
	g.zw = nil
}

// withGzip wraps w for r when r accepts gzip; the returned func ends the
// response's compression.
func withGzip(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, func()) {
	g := &gzipWriter{ResponseWriter: w, accept: acceptsGzip(r.Header.Values("Accept-Encoding")), head: r.Method == http.MethodHead}
	return g, g.close
}
