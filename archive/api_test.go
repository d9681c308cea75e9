package archive_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
)

// The archive's own API, without a front end: its failures are domain
// errors that errors.Is and errors.As tell apart, with the attribute at
// fault and a comment.

func TestAPIStoreErrors(t *testing.T) {
	f := newFixture(t, archive.DuplicateReject)
	ctx := context.Background()
	o := ctObject(t, "1.2.826.0.1.3680043.10.99.1")
	rq := func(inst, ts string, data []byte) *archive.StoreRequest {
		return &archive.StoreRequest{Origin: archive.Origin{AETitle: "MODALITY", Addr: "127.0.0.1:1"},
			SOPClassUID: o.class, SOPInstanceUID: inst, TransferSyntaxUID: ts, Data: bytes.NewReader(data)}
	}
	st, err := f.ar.Store(ctx, rq(o.inst, dicom.ExplicitVRLittleEndian.UID, o.bytes(t)))
	if err != nil || st.StudyInstanceUID == "" || st.Replaced {
		t.Fatalf("Store = %+v, %v", st, err)
	}
	in, err := f.idx.Get(ctx, o.inst)
	if err != nil || in.SourceAET != "MODALITY" || in.SourceAddr != "127.0.0.1:1" {
		t.Errorf("index row: %+v, %v (want the origin recorded)", in, err)
	}
	var e *archive.Error
	if _, err := f.ar.Store(ctx, rq(o.inst, dicom.ExplicitVRLittleEndian.UID, o.bytes(t))); !errors.Is(err, archive.ErrDuplicate) {
		t.Errorf("again: %v, want ErrDuplicate", err)
	}
	_, err = f.ar.Store(ctx, rq("1.2.826.0.1.3680043.10.99.2", dicom.ExplicitVRLittleEndian.UID, o.bytes(t)))
	if !errors.Is(err, archive.ErrAttributeMismatch) || !errors.As(err, &e) || e.Tag != dicom.SOPInstanceUID || e.Comment == "" {
		t.Errorf("mismatch: %v, want ErrAttributeMismatch about SOPInstanceUID", err)
	}
	if _, err := f.ar.Store(ctx, rq("1.2.826.0.1.3680043.10.99.3", "not a UID", nil)); !errors.Is(err, archive.ErrCannotUnderstand) {
		t.Errorf("unknown transfer syntax: %v, want ErrCannotUnderstand", err)
	}
	if archive.KindOf(err) != archive.ErrAttributeMismatch || archive.KindOf(io.EOF) != nil {
		t.Error("KindOf")
	}
}

func TestAPIQueryAndRetrieve(t *testing.T) {
	f := qrFixture(t)
	// A signed-in user with find and bulk-query, as a web front end will
	// put in the context.
	user := archive.WithPrincipal(context.Background(), &archive.Principal{Kind: archive.User, Name: "alice",
		Roles: []string{"radiologist"}, Grant: archive.Permissions{archive.PermFind: true, archive.PermBulkQuery: true}})
	studies := ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", "")
	var got []string
	err := f.ar.Query(user, &archive.Query{Model: archive.StudyRoot, Identifier: studies, Limit: 10}, func(m archive.Match) error {
		got = append(got, m.DataSet.String(dicom.StudyInstanceUID))
		return nil
	})
	if err != nil || len(got) != 3 {
		t.Fatalf("Query = %v, %d matches", err, len(got))
	}
	// The request's limit cuts below the archive's cap.
	n := 0
	err = f.ar.Query(user, &archive.Query{Model: archive.StudyRoot, Identifier: studies, Limit: 2}, func(archive.Match) error { n++; return nil })
	if !errors.Is(err, archive.ErrTooManyResults) || n != 2 {
		t.Errorf("Limit 2: %v after %d matches, want ErrTooManyResults after 2", err, n)
	}
	// Offset pages through the same order: two pages of 2 from offset 0
	// and 2 list the three studies once; past the cap after an offset,
	// ErrTooManyResults still says more exist.
	var paged []string
	for _, off := range []int{0, 2} {
		err = f.ar.Query(user, &archive.Query{Model: archive.StudyRoot, Identifier: studies, Limit: 2, Offset: off}, func(m archive.Match) error {
			paged = append(paged, m.DataSet.String(dicom.StudyInstanceUID))
			return nil
		})
		if want := off == 0; errors.Is(err, archive.ErrTooManyResults) != want || (!want && err != nil) {
			t.Errorf("Limit 2 Offset %d: %v", off, err)
		}
	}
	if !slices.Equal(paged, got) {
		t.Errorf("pages %v, want %v", paged, got)
	}
	// Without bulk-query, or without a principal, the universal query is
	// not authorized.
	for _, ctx := range []context.Context{context.Background(), nobulk} {
		err := f.ar.Query(ctx, &archive.Query{Model: archive.StudyRoot, Identifier: studies}, func(archive.Match) error { return nil })
		if !errors.Is(err, archive.ErrNotAuthorized) {
			t.Errorf("universal query: %v, want ErrNotAuthorized", err)
		}
	}
	err = f.ar.Query(user, &archive.Query{Model: archive.StudyRoot, Identifier: ident(t, "QueryRetrieveLevel", "FRAME")}, nil)
	var e *archive.Error
	if !errors.Is(err, archive.ErrInvalidIdentifier) || !errors.As(err, &e) || e.Tag != dicom.QueryRetrieveLevel {
		t.Errorf("bad level: %v", err)
	}
	if err := f.ar.Query(user, &archive.Query{Model: 9, Identifier: studies}, nil); !errors.Is(err, archive.ErrNotSupported) {
		t.Errorf("unknown model: %v", err)
	}

	// Retrieve streams the instances, each with an opener for its bytes.
	var insts []*archive.Instance
	err = f.ar.Retrieve(user, &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA)},
		func(in *archive.Instance) error { insts = append(insts, in); return nil })
	if err != nil || len(insts) == 0 {
		t.Fatalf("Retrieve = %v, %d instances", err, len(insts))
	}
	rc, err := insts[0].Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ds, err := dicom.ReadDataSet(rc, dicom.ExplicitVRLittleEndian, 1<<24)
	rc.Close()
	if err != nil || ds.String(dicom.SOPInstanceUID) != insts[0].SOPInstanceUID {
		t.Errorf("opened instance: %v", err)
	}
	stop := errors.New("enough")
	if err := f.ar.Retrieve(user, &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: ident(t, "QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyA)},
		func(*archive.Instance) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("a front end's error: %v, want it back", err)
	}
	err = f.ar.Retrieve(user, &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: ident(t, "QueryRetrieveLevel", "STUDY")}, nil)
	if !errors.Is(err, archive.ErrInvalidIdentifier) {
		t.Errorf("universal retrieve: %v, want ErrInvalidIdentifier", err)
	}
	if _, err := f.ar.Destination(context.Background(), "NOBODY"); !errors.Is(err, archive.ErrUnknownDestination) {
		t.Errorf("Destination: %v", err)
	}
}
