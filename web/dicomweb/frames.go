package dicomweb

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// WADO-RS frames (PS3.18 10.4, the Frames resource): the pixel
// data of some frames of one instance, one part per frame, in the order
// the frame list names them. Native pixel data is served as
// application/octet-stream in Explicit VR Little Endian (the default of
// PS3.18 Table 8.7.3-5): the frame's bytes, little endian. Compressed
// pixel data is served as stored, when the client accepts its syntax
// (transfer-syntax=* or the stored UID); Ward neither compresses nor
// decompresses, and says so in a 406.

// maxFrameList bounds the entries of a frame list, and maxRewinds the
// times a list may go back to an earlier frame (each rewind reads the
// object again from its start).
const (
	maxFrameList = 4096
	maxRewinds   = 16
)

// octetStream is the media type of native frames and bulk data.
const octetStream = "application/octet-stream"

// frameTypes maps compressed transfer syntaxes to the media type of their
// frames (PS3.18 Table 8.7.3-5); a syntax not listed travels as
// application/octet-stream.
var frameTypes = map[string]string{}

// defaultSyntax is the transfer syntax a frame media type means when the
// Accept range names none (PS3.18 Table 8.7.3-5).
var defaultSyntax = map[string]string{
	octetStream:         dicom.ExplicitVRLittleEndian.UID,
	"image/jpeg":        "1.2.840.10008.1.2.4.50",
	"image/jls":         "1.2.840.10008.1.2.4.80",
	"image/jp2":         "1.2.840.10008.1.2.4.90",
	"image/jpx":         "1.2.840.10008.1.2.4.92",
	"image/x-dicom-rle": "1.2.840.10008.1.2.5",
	"image/jphc":        "1.2.840.10008.1.2.4.201",
	"image/jxl":         "1.2.840.10008.1.2.4.110",
}

func init() {
	for typ, suffixes := range map[string][]string{
		"image/jpeg": {"4.50", "4.51", "4.57", "4.70"},
		"image/jls":  {"4.80", "4.81"},
		"image/jp2":  {"4.90", "4.91"},
		"image/jpx":  {"4.92", "4.93"},
		"image/jphc": {"4.201", "4.202", "4.203"},
		"image/jxl":  {"4.110", "4.111", "4.112"},
		"video/mpeg": {"4.100", "4.100.1", "4.101", "4.101.1"},
		"video/mp4":  {"4.102", "4.102.1", "4.103", "4.103.1", "4.104", "4.104.1", "4.105", "4.105.1", "4.106", "4.106.1", "4.107", "4.108"},
	} {
		for _, s := range suffixes {
			frameTypes["1.2.840.10008.1.2."+s] = typ
		}
	}
	frameTypes["1.2.840.10008.1.2.5"] = "image/x-dicom-rle"
}

// errHeadOnly: a HEAD request was answered with the headers only.
var errHeadOnly = errors.New("headers only")

// parseFrameList reads a frame list ("1,3,5"): 1-based frame numbers,
// at most maxFrameList of them.
func parseFrameList(s string) ([]int, error) {
	parts := strings.Split(s, ",")
	if len(parts) > maxFrameList {
		return nil, failf(http.StatusBadRequest, "more than %d frames in the frame list", maxFrameList)
	}
	out := make([]int, 0, len(parts))
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > dicom.MaxFrames {
			return nil, failf(http.StatusBadRequest, "frame list %q: frame numbers are integers from 1, comma-separated", truncate(s, 64))
		}
		out = append(out, n)
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// acceptOf reads the request's acceptable media types: the accept query
// parameter when present (PS3.18 8.3.3.1), else the Accept headers.
func acceptOf(r *http.Request) ([]MediaRange, error) {
	h := r.Header.Values("Accept")
	if q, ok := r.URL.Query()["accept"]; ok {
		h = q
	}
	rs, err := ParseAccept(h)
	if err != nil {
		return nil, failf(http.StatusBadRequest, "malformed Accept header or accept parameter")
	}
	return rs, nil
}

// frameForm is how frames go out: the part's media type and the
// transfer syntax its bytes are in.
type frameForm struct {
	typ, syntax string
}

// negotiateFrames picks the first acceptable form of the stored frames:
// native frames as application/octet-stream (Explicit VR Little Endian),
// compressed ones as stored when the range accepts their syntax.
func negotiateFrames(ranges []MediaRange, stored *dicom.TransferSyntax, encapsulated bool) (frameForm, error) {
	storedType := octetStream
	if t, ok := frameTypes[stored.UID]; ok {
		storedType = t
	}
	for _, mr := range ranges {
		typ, ts := octetStream, mr.Params["transfer-syntax"]
		switch {
		case mr.Type == "multipart/related":
			if t := strings.ToLower(mr.Params["type"]); t != "" {
				typ = t
			}
		case mr.Type == "*/*":
		default:
			continue // frames are served as multipart/related only
		}
		if !encapsulated {
			native := ts == "" || ts == "*" || ts == dicom.ExplicitVRLittleEndian.UID || ts == dicom.ImplicitVRLittleEndian.UID
			if (typ == octetStream || typ == "*/*") && native {
				return frameForm{octetStream, dicom.ExplicitVRLittleEndian.UID}, nil
			}
			continue
		}
		switch {
		case ts == "*" || ts == stored.UID:
			if typ == octetStream {
				return frameForm{octetStream, stored.UID}, nil
			}
			if typ == "*/*" || typ == storedType || (MediaRange{Type: typ}).Matches(storedType) {
				return frameForm{storedType, stored.UID}, nil
			}
		case ts == "" && typ != octetStream && typ == storedType && defaultSyntax[typ] == stored.UID:
			return frameForm{storedType, stored.UID}, nil
		}
	}
	if encapsulated {
		name := stored.Name
		if name == "" {
			name = "an unknown syntax"
		}
		return frameForm{}, failf(http.StatusNotAcceptable, "the frames are stored compressed as %s (%s) and Ward does not decompress them: accept multipart/related; type=%q; transfer-syntax=%s, or transfer-syntax=*", name, stored.UID, storedType, stored.UID)
	}
	return frameForm{}, failf(http.StatusNotAcceptable, "the frames are stored uncompressed and Ward does not compress them: accept multipart/related; type=\"application/octet-stream\" (transfer-syntax absent, * or %s)", dicom.ExplicitVRLittleEndian.UID)
}

// openFrames opens an instance's data set at its pixel data.
func openFrames(ctx context.Context, inst *archive.Instance) (*dicom.Frames, io.Closer, error) {
	ts := dicom.LookupTransferSyntax(inst.TransferSyntaxUID)
	if ts == nil {
		return nil, nil, archive.Failf(archive.ErrProcessing, "the stored object's transfer syntax %q is not valid", inst.TransferSyntaxUID)
	}
	rc, err := inst.Open(ctx)
	if err != nil {
		if e := archive.IntegrityFailure(err); e != nil {
			return nil, nil, e
		}
		return nil, nil, &archive.Error{Kind: archive.ErrStorage, Comment: "opening the stored object failed", Err: err}
	}
	f, err := dicom.OpenFrames(rc, ts)
	if err != nil {
		rc.Close()
		if e := archive.IntegrityFailure(err); e != nil {
			return nil, nil, e
		}
		if errors.Is(err, dicom.ErrNoPixelData) {
			return nil, nil, failf(http.StatusNotFound, "the instance has no pixel data")
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, &archive.Error{Kind: archive.ErrProcessing, Comment: "the stored object's pixel data cannot be read", Err: err}
	}
	return f, rc, nil
}

func (s *Server) frames(w http.ResponseWriter, r *http.Request) {
	t, ok := targetOf(w, r)
	if !ok {
		return
	}
	list, err := parseFrameList(r.PathValue("frames"))
	if err == nil {
		err = checkRewinds(list)
	}
	var ranges []MediaRange
	if err == nil {
		ranges, err = acceptOf(r)
	}
	if err != nil {
		s.answerErr(w, r, err)
		return
	}
	found, err := s.findInstances(r.Context(), t.RetrieveRequest())
	if err != nil {
		s.answerErr(w, r, err)
		return
	}
	if len(found) == 0 {
		web.Fail(w, r, http.StatusNotFound, "no such instance")
		return
	}
	// A SOP Instance UID names one object; anything more is not sent.
	for _, in := range found[1:] {
		report(in, archive.ErrNotAttempted)
	}
	sent, err := s.sendFrames(w, r, found[0], list, ranges)
	if errors.Is(err, errHeadOnly) {
		report(found[0], archive.ErrNotAttempted)
		return
	}
	report(found[0], err)
	switch {
	case err != nil && sent < 0:
		s.answerErr(w, r, err)
	case err != nil:
		s.abort(r, sent, len(list), err)
	}
}

// checkRewinds refuses a frame list that goes back more than maxRewinds
// times.
func checkRewinds(list []int) error {
	n := 0
	for i := 1; i < len(list); i++ {
		if list[i] <= list[i-1] {
			n++
		}
	}
	if n > maxRewinds {
		return failf(http.StatusBadRequest, "the frame list goes back to an earlier frame %d times; at most %d (list frames in ascending order)", n, maxRewinds)
	}
	return nil
}

// sendFrames answers the frames of inst: nothing is written before the
// frame numbers and the form are known good. It returns the frames sent,
// -1 when the answer has not started (the error can still be a status).
func (s *Server) sendFrames(w http.ResponseWriter, r *http.Request, inst *archive.Instance, list []int, ranges []MediaRange) (int, error) {
	ctx := r.Context()
	f, c, err := openFrames(ctx, inst)
	if err != nil {
		return -1, err
	}
	defer func() {
		if f != nil {
			f.Close()
			c.Close()
		}
	}()
	for _, n := range list {
		if n > f.Info.NumFrames {
			return -1, failf(http.StatusNotFound, "frame %d is beyond the instance's %d frames", n, f.Info.NumFrames)
		}
	}
	form, err := negotiateFrames(ranges, f.TS, f.Encapsulated)
	if err != nil {
		return -1, err
	}
	m := NewMultipart(w, form.typ, "transfer-syntax="+form.syntax)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return 0, errHeadOnly
	}
	h := textproto.MIMEHeader{"Content-Type": {form.typ + "; transfer-syntax=" + form.syntax}}
	last := 0
	for i, n := range list {
		if n <= last {
			// Back to an earlier frame: read the object again.
			f.Close()
			c.Close()
			f, c = nil, nil
			if f, c, err = openFrames(ctx, inst); err != nil {
				return i, err
			}
		}
		last = n
		pw, err := m.Part(h)
		if err != nil {
			return i, err
		}
		if _, err := f.WriteFrame(pw, n); err != nil {
			return i, err
		}
	}
	return len(list), m.Close()
}
