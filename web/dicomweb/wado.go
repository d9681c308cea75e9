package dicomweb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/web"
)

// WADO-RS retrieve of instances (PS3.18 10.4.1: Retrieve Study, Series,
// Instance) as Part 10 files in a multipart/related answer.
//
// Representation (PS3.18 8.7.3). The Accept ranges are tried by weight:
//   - multipart/related; type="application/dicom" (type absent: the
//     same), with transfer-syntax=UID, =* (as stored) or none;
//   - application/dicom (one part, the file itself as the body): only
//     for a single instance;
//   - */* and multipart/*: multipart/related; type="application/dicom",
//     as stored.
//
// Transfer syntax, per instance (outputSyntax): "*" is the stored one; a
// named one is the stored one if equal, a transcoding between the native
// syntaxes (implicit and explicit VR little endian, explicit big endian,
// deflated) otherwise, and refused between native and encapsulated
// (Ward neither compresses nor decompresses). None named: the PS3.18
// default, Explicit VR Little Endian, for an object stored native; an
// object stored compressed is sent as stored (each part's Content-Type
// and the file's meta header say which syntax it is in).
//
// A single instance that cannot be had in the syntax asked is 406; in a
// study or series those instances are left out, with a Warning header
// saying how many (406 when it would leave out all).
//
// The instances are found first (the index's read ends before the first
// byte is sent, and a request that matches nothing or only unservable
// objects still gets its status); then each is streamed from its file,
// never held whole in memory. An error after the first byte cannot change
// the status: the connection is then cut, so that the client sees a
// truncated answer rather than a complete-looking short one.

// errNotAcceptable: an instance cannot be had in the transfer syntax
// asked (reported to Delivered; answered 406 when it was the only one).
var errNotAcceptable = errors.New("transfer syntax not available")

// syntaxAsStored and syntaxDefault are the transfer-syntax choices beside
// a named UID.
const (
	syntaxAsStored = "*"
	syntaxDefault  = ""
)

// dicomChoice is how the client will take DICOM objects.
type dicomChoice struct {
	// single: one application/dicom body, not multipart.
	single bool
	// syntax is a transfer syntax UID, syntaxAsStored or syntaxDefault.
	syntax string
}

// negotiateDICOM picks the representation of DICOM objects from the
// request's Accept headers; single says the resource is one instance.
// The error is a 406 httpError or ErrBadAccept (400).
func negotiateDICOM(r *http.Request, single bool) (dicomChoice, error) {
	ranges, err := ParseAccept(r.Header.Values("Accept"))
	if err != nil {
		return dicomChoice{}, err
	}
	for _, m := range ranges {
		ts, hasTS := m.Params["transfer-syntax"]
		switch {
		case m.Type == "multipart/related":
			if t := m.Params["type"]; t != "" && !strings.EqualFold(t, "application/dicom") {
				continue
			}
		case m.Type == "application/dicom":
			if !single {
				continue
			}
		case m.Type == "*/*", m.Type == "multipart/*":
			return dicomChoice{syntax: syntaxAsStored}, nil
		default:
			continue
		}
		if hasTS && ts != syntaxAsStored && dicom.LookupTransferSyntax(ts) == nil {
			return dicomChoice{}, failf(http.StatusNotAcceptable, "transfer-syntax %q is not a transfer syntax UID", ts)
		}
		return dicomChoice{single: m.Type == "application/dicom", syntax: strings.TrimSpace(ts)}, nil
	}
	what := `multipart/related; type="application/dicom"`
	if single {
		what += ` or application/dicom`
	}
	return dicomChoice{}, failf(http.StatusNotAcceptable, "this resource is served as %s (with transfer-syntax=UID or *), not as the Accept header asks", what)
}

// outputSyntax is the transfer syntax an object stored in stored is sent
// in when want is asked (a UID, syntaxAsStored or syntaxDefault), or
// errNotAcceptable.
func outputSyntax(stored, want string) (string, error) {
	st := dicom.LookupTransferSyntax(stored)
	switch {
	case want == syntaxAsStored:
		return stored, nil
	case want == syntaxDefault:
		if dicom.IsUncompressed(st) {
			return dicom.ExplicitVRLittleEndian.UID, nil
		}
		return stored, nil
	case want == stored:
		return stored, nil
	case dicom.IsUncompressed(st) && dicom.IsUncompressed(dicom.LookupTransferSyntax(want)):
		return want, nil
	}
	return "", fmt.Errorf("%w: stored in %s, asked for %s", errNotAcceptable, tsName(stored), tsName(want))
}

// tsName names a transfer syntax for messages.
func tsName(uid string) string {
	if ts := dicom.LookupTransferSyntax(uid); ts != nil && ts.Name != "" {
		return ts.Name + " (" + uid + ")"
	}
	return uid
}

// report tells in's Delivered how delivering it went.
func report(in *archive.Instance, err error) {
	if in.Delivered != nil {
		in.Delivered(err)
	}
}

// findInstances asks the service for the instances of req. Their
// delivery is the caller's to report, every one of them.
func (s *Server) findInstances(ctx context.Context, req *archive.RetrieveRequest) ([]*archive.Instance, error) {
	var found []*archive.Instance
	err := s.svc.Retrieve(ctx, req, func(in *archive.Instance) error {
		found = append(found, in)
		return nil
	})
	if err != nil {
		// The service ended the retrieve: nothing more will be tried.
		for _, in := range found {
			report(in, archive.ErrNotAttempted)
		}
		return nil, err
	}
	return found, nil
}

// outgoing is an instance to send, in the syntax it goes out in.
type outgoing struct {
	in     *archive.Instance
	syntax string
}

// plan sorts found instances into those sent (in the syntax chosen) and
// those that cannot be had so, which it reports as not delivered; the
// error is the first refusal.
func plan(found []*archive.Instance, want string) ([]outgoing, int, error) {
	var send []outgoing
	var first error
	skipped := 0
	for _, in := range found {
		ts, err := outputSyntax(in.TransferSyntaxUID, want)
		if err != nil {
			report(in, err)
			skipped++
			if first == nil {
				first = err
			}
			continue
		}
		send = append(send, outgoing{in: in, syntax: ts})
	}
	return send, skipped, first
}

// openPart10 opens in for sending as a Part 10 file in syntax: the file
// meta header, and the data set to stream after it.
type part10 struct {
	head     []byte
	body     io.ReadCloser
	from, to *dicom.TransferSyntax
}

func openPart10(ctx context.Context, o outgoing) (*part10, error) {
	var head bytes.Buffer
	err := dicom.WriteFileHeader(&head, &dicom.FileMeta{
		MediaStorageSOPClassUID:    o.in.SOPClassUID,
		MediaStorageSOPInstanceUID: o.in.SOPInstanceUID,
		TransferSyntaxUID:          o.syntax,
	})
	if err != nil {
		return nil, &archive.Error{Kind: archive.ErrProcessing, Comment: "a stored object's file meta information cannot be written", Err: err}
	}
	if o.in.Open == nil {
		return nil, &archive.Error{Kind: archive.ErrProcessing, Comment: "a stored object cannot be opened", Err: errors.New("no Open")}
	}
	rc, err := o.in.Open(ctx)
	if err != nil {
		if e := archive.IntegrityFailure(err); e != nil {
			return nil, e
		}
		return nil, &archive.Error{Kind: archive.ErrStorage, Comment: "a stored object cannot be read", Err: err}
	}
	p := &part10{head: head.Bytes(), body: rc}
	if o.syntax != o.in.TransferSyntaxUID {
		p.from, p.to = dicom.LookupTransferSyntax(o.in.TransferSyntaxUID), dicom.LookupTransferSyntax(o.syntax)
	}
	return p, nil
}

// writeTo writes the file to w and closes the object.
func (p *part10) writeTo(w io.Writer) error {
	defer p.body.Close()
	if _, err := w.Write(p.head); err != nil {
		return err
	}
	if p.to != nil {
		return dicom.Transcode(w, p.body, p.from, p.to)
	}
	_, err := io.Copy(w, p.body)
	return err
}

// retrieve serves Retrieve Study, Series and Instance.
func (s *Server) retrieve(w http.ResponseWriter, r *http.Request) {
	t, ok := targetOf(w, r)
	if !ok {
		return
	}
	single := t.Instance != ""
	choice, err := negotiateDICOM(r, single)
	if err != nil {
		s.answerErr(w, r, err)
		return
	}
	found, err := s.findInstances(r.Context(), t.RetrieveRequest())
	if err != nil {
		s.web.Error(w, r, err)
		return
	}
	if len(found) == 0 {
		web.Fail(w, r, http.StatusNotFound, "no "+strings.ToLower(levelName(t))+" with these UIDs is stored")
		return
	}
	send, skipped, refusal := plan(found, choice.syntax)
	if len(send) == 0 {
		web.Fail(w, r, http.StatusNotAcceptable, refusal.Error()+"; ask for transfer-syntax=* to have objects as stored")
		return
	}
	if skipped > 0 {
		w.Header().Set("Warning", fmt.Sprintf(`299 ward "%d of %d instances left out: %s"`, skipped, len(found), strings.ReplaceAll(refusal.Error(), `"`, `'`)))
	}
	if choice.single {
		s.sendSingle(w, r, send[0])
		return
	}
	s.sendMultipart(w, r, send)
}

// levelName names a target's level in messages.
func levelName(t Target) string {
	switch t.Level() {
	case "IMAGE":
		return "Instance"
	case "SERIES":
		return "Series"
	}
	return "Study"
}

// sendSingle answers with one Part 10 file as the body (application/dicom).
func (s *Server) sendSingle(w http.ResponseWriter, r *http.Request, o outgoing) {
	if r.Method == http.MethodHead {
		report(o.in, archive.ErrNotAttempted)
		w.Header().Set("Content-Type", "application/dicom; transfer-syntax="+o.syntax)
		w.WriteHeader(http.StatusOK)
		return
	}
	p, err := openPart10(r.Context(), o)
	if err != nil {
		report(o.in, err)
		s.web.Error(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/dicom; transfer-syntax="+o.syntax)
	err = p.writeTo(w)
	report(o.in, err)
	if err != nil {
		s.abort(r, 0, 1, err)
	}
}

// sendMultipart streams the instances as parts of a multipart/related
// answer; every instance's delivery is reported, those never tried as
// archive.ErrNotAttempted.
func (s *Server) sendMultipart(w http.ResponseWriter, r *http.Request, send []outgoing) {
	done := 0
	defer func() {
		for _, o := range send[done:] {
			report(o.in, archive.ErrNotAttempted)
		}
	}()
	mp := NewMultipart(w, "application/dicom")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	ctx := r.Context()
	for _, o := range send {
		if err := ctx.Err(); err != nil {
			if mp.Started() {
				s.abort(r, done, len(send), err)
			}
			s.web.Error(w, r, err)
			return
		}
		p, err := openPart10(ctx, o)
		if err != nil {
			report(o.in, err)
			done++
			if mp.Started() {
				s.abort(r, done-1, len(send), err)
			}
			s.web.Error(w, r, err)
			return
		}
		pw, err := mp.Part(textproto.MIMEHeader{"Content-Type": {"application/dicom; transfer-syntax=" + o.syntax}})
		if err == nil {
			err = p.writeTo(pw)
		} else {
			p.body.Close()
		}
		if err == nil {
			// Each object reaches the client as soon as it is read.
			err = http.NewResponseController(w).Flush()
		}
		report(o.in, err)
		done++
		if err != nil {
			s.abort(r, done-1, len(send), err)
		}
	}
	if err := mp.Close(); err != nil {
		s.abort(r, done, len(send), err)
	}
}

// abort ends an answer whose status is sent: it logs why (no patient
// data: counts and the error) and cuts the connection, so that the
// client cannot take a truncated answer for a complete one.
func (s *Server) abort(r *http.Request, sent, total int, err error) {
	s.web.Logger().Warn("dicomweb: retrieve cut short", "path", r.URL.Path, "sent", sent, "of", total, "err", err)
	panic(http.ErrAbortHandler)
}
