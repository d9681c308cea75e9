package dicomweb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/web"
)

// WADO-RS metadata (PS3.18 10.4.1.1.2, 10.4.3.3.2): the attributes of
// every instance of a study, a series or one instance, as a JSON array in
// the DICOM JSON Model (application/dicom+json), with bulk data as
// BulkDataURIs (see bulkdata.go). The archive keeps each instance's JSON
// with its index row, so a warm series is one index query; the answer is
// streamed an instance at a time.

// mediaDICOMJSON is the metadata's media type.
const mediaDICOMJSON = "application/dicom+json"

// acceptsJSON reports whether the request's Accept headers take the DICOM
// JSON Model; false with an answer written when they cannot be read.
func acceptsJSON(w http.ResponseWriter, r *http.Request) (ok, answered bool) {
	ranges, err := ParseAccept(r.Header.Values("Accept"))
	if err != nil {
		web.Fail(w, r, http.StatusBadRequest, err.Error())
		return false, true
	}
	for _, m := range ranges {
		if m.Matches(mediaDICOMJSON) || m.Matches("application/json") {
			return true, false
		}
	}
	return false, false
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	t, ok := targetOf(w, r)
	if !ok {
		return
	}
	if ok, answered := acceptsJSON(w, r); !ok {
		if !answered {
			web.Fail(w, r, http.StatusNotAcceptable, "metadata is served as application/dicom+json only")
		}
		return
	}
	ctx := r.Context()
	req := t.RetrieveRequest()
	req.Metadata = true
	base := s.web.BaseURL(r) + Root
	started := false
	err := s.svc.Retrieve(ctx, req, func(in *archive.Instance) error {
		err := s.writeMetadata(ctx, w, in, base, started)
		started = started || err == nil || errors.Is(err, errWriting)
		if in.Delivered != nil {
			in.Delivered(err)
		}
		return err
	})
	switch {
	case err != nil && !started:
		s.web.Error(w, r, err)
	case err != nil:
		// The status is sent: a client must not take a cut array for the
		// whole, so the connection is broken off.
		if !errors.Is(err, errWriting) {
			s.web.Logger().Warn("metadata answer failed midway", "path", r.URL.Path, "err", err)
		}
		panic(http.ErrAbortHandler)
	case !started:
		web.Fail(w, r, http.StatusNotFound, "no such "+targetNoun(t)+" is stored")
	default:
		_, _ = io.WriteString(w, "]")
	}
}

// errWriting wraps a failure to write the answer (the client went away).
var errWriting = errors.New("writing the answer")

// writeMetadata writes one instance's metadata as the next element of the
// array (opening it, with the headers, for the first), its BulkDataURI
// placeholders replaced with the instance's bulk data URL under base.
func (s *Server) writeMetadata(ctx context.Context, w http.ResponseWriter, in *archive.Instance, base string, started bool) error {
	if in.Metadata == nil {
		return archive.Fail(archive.ErrProcessing, "the archive gave no metadata")
	}
	md, err := in.Metadata(ctx)
	if err != nil {
		return err
	}
	if !started {
		w.Header().Set("Content-Type", mediaDICOMJSON)
		w.WriteHeader(http.StatusOK)
	}
	sep := ","
	if !started {
		sep = "["
	}
	url := bulkURL(base, in)
	if _, err := io.WriteString(w, sep); err != nil {
		return errors.Join(errWriting, err)
	}
	prefix := []byte(archive.MetadataBulkPrefix)
	for {
		i := bytes.Index(md, prefix)
		if i < 0 {
			break
		}
		if _, err := w.Write(md[:i]); err != nil {
			return errors.Join(errWriting, err)
		}
		if _, err := io.WriteString(w, url); err != nil {
			return errors.Join(errWriting, err)
		}
		md = md[i+len(prefix):]
	}
	if _, err := w.Write(md); err != nil {
		return errors.Join(errWriting, err)
	}
	return nil
}

// bulkURL is the URL of an instance's bulk data resource (the element's
// path follows), as it appears in a JSON string.
func bulkURL(base string, in *archive.Instance) string {
	u := base + "/studies/" + in.StudyInstanceUID + "/series/" + in.SeriesInstanceUID + "/instances/" + in.SOPInstanceUID + "/bulkdata"
	j, _ := json.Marshal(u)
	return string(j[1 : len(j)-1])
}

// targetNoun names what a target is for a message.
func targetNoun(t Target) string {
	switch {
	case t.Instance != "":
		return "instance"
	case t.Series != "":
		return "series"
	}
	return "study"
}
