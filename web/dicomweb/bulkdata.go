package dicomweb

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// WADO-RS bulk data (PS3.18 10.4.1.1.4): the value of one element that the
// metadata gave as a BulkDataURI, named by its path under the instance
// (dicom.FormatBulkPath: "7FE00010", "00540016/0/00420011"), as a
// multipart/related answer of one application/octet-stream part, streamed
// from the object. Values are as stored (byte order included); pixel data
// of an encapsulated syntax is served by frame (frames.go), not here.

// mediaOctetStream is the bulk data's media type.
const mediaOctetStream = "application/octet-stream"

// maxBulkWalk bounds the bytes kept while walking an object to the element
// asked for (values before it that are not bulk data themselves).
const maxBulkWalk = archive.MaxMetadataSize

// acceptsBulk reports whether the request's Accept headers take bulk data
// as multipart/related; type="application/octet-stream"; false with an
// answer written when they cannot be read.
func acceptsBulk(w http.ResponseWriter, r *http.Request) (ok, answered bool) {
	ranges, err := ParseAccept(r.Header.Values("Accept"))
	if err != nil {
		web.Fail(w, r, http.StatusBadRequest, err.Error())
		return false, true
	}
	for _, m := range ranges {
		if m.Type == "*/*" {
			return true, false
		}
		if !m.Matches("multipart/related") {
			continue
		}
		if typ, ok := m.Params["type"]; !ok || typ == mediaOctetStream || typ == "*/*" || typ == "application/*" {
			if ts, ok := m.Params["transfer-syntax"]; !ok || ts == "*" {
				return true, false
			}
		}
	}
	return false, false
}

func (s *Server) bulkdata(w http.ResponseWriter, r *http.Request) {
	t, ok := targetOf(w, r)
	if !ok {
		return
	}
	path, err := dicom.ParseBulkPath(r.PathValue("path"))
	if err != nil {
		web.Fail(w, r, http.StatusBadRequest, "the bulk data path is not one this server gives: a tag of 8 hex digits, then item index and tag pairs")
		return
	}
	if ok, answered := acceptsBulk(w, r); !ok {
		if !answered {
			web.Fail(w, r, http.StatusNotAcceptable, `bulk data is served as multipart/related; type="application/octet-stream", as stored`)
		}
		return
	}
	ctx := r.Context()
	var mp *Multipart
	found := false
	err = s.svc.Retrieve(ctx, t.RetrieveRequest(), func(in *archive.Instance) error {
		if found {
			return nil // one instance by its UIDs
		}
		found = true
		err := s.writeBulk(w, r, in, path, &mp)
		if in.Delivered != nil {
			in.Delivered(err)
		}
		return err
	})
	switch {
	case err == nil && !found:
		web.Fail(w, r, http.StatusNotFound, "no such instance is stored")
	case err == nil:
		_ = mp.Close()
	case mp == nil || !mp.Started():
		switch {
		case errors.Is(err, dicom.ErrNoBulk):
			web.Fail(w, r, http.StatusNotFound, "the instance has no bulk data at that path")
		case errors.Is(err, dicom.ErrBulkEncapsulated):
			web.Fail(w, r, http.StatusNotAcceptable, "the pixel data of this instance is encapsulated (compressed): retrieve it by frame, at .../instances/"+t.Instance+"/frames/1")
		case errors.Is(err, errStoredObject):
			s.web.Error(w, r, archive.Fail(archive.ErrStorage, "reading the stored object failed"))
		default:
			s.web.Error(w, r, err)
		}
	default:
		if !errors.Is(err, errWriting) {
			s.web.Logger().Warn("bulk data answer failed midway", "path", r.URL.Path, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// errStoredObject wraps a failure to read the stored object.
var errStoredObject = errors.New("reading the stored object")

// writeBulk streams the value at path of in as the one part of a
// multipart answer (*mp, started once the value is found).
func (s *Server) writeBulk(w http.ResponseWriter, r *http.Request, in *archive.Instance, path []uint32, mp **Multipart) error {
	ts := dicom.LookupTransferSyntax(in.TransferSyntaxUID)
	if ts == nil {
		return fmt.Errorf("%w: unknown transfer syntax %s", errStoredObject, in.TransferSyntaxUID)
	}
	rc, err := in.Open(r.Context())
	if err != nil {
		return fmt.Errorf("%w: %w", errStoredObject, err)
	}
	defer rc.Close()
	return dicom.ReadBulk(rc, ts, path, maxBulkWalk, dicom.DefaultBulkThreshold, func(e *dicom.Element, value io.Reader) error {
		*mp = NewMultipart(w, mediaOctetStream)
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", mediaOctetStream)
		h.Set("Content-Length", strconv.FormatInt(e.BulkLength, 10))
		h.Set("Content-Location", r.URL.Path)
		pw, err := (*mp).Part(h)
		if err != nil {
			return errors.Join(errWriting, err)
		}
		_, err = io.Copy(answerWriter{pw}, value)
		return err
	})
}

// answerWriter marks its writer's failures as errWriting (the client went
// away), to tell them from the object's.
type answerWriter struct{ w io.Writer }

func (a answerWriter) Write(p []byte) (int, error) {
	n, err := a.w.Write(p)
	if err != nil {
		err = errors.Join(errWriting, err)
	}
	return n, err
}
