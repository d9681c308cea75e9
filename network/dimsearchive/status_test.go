package dimsearchive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
)

var opNames = [...]string{OpStore: "C-STORE", OpFind: "C-FIND", OpRetrieve: "C-MOVE/C-GET", OpEcho: "C-ECHO"}

// allowed are the failure statuses each service may answer with,
// transcribed from PS3.4 (B.2.3 C-STORE; C.4.1.1.4 C-FIND; C.4.2.1.5
// C-MOVE and C.4.3.1.4 C-GET, united) and the general statuses of PS3.7
// Annex C that apply to any DIMSE-C service (C.5: 0110 processing failure,
// 0111 duplicate SOP instance, 0117 invalid SOP instance, 0122 SOP class
// not supported, 0124 not authorized), independently of dimse's constants.
var allowed = [...]map[uint16]bool{
	OpStore:    {0xA700: true, 0xA900: true, 0xC000: true, 0x0110: true, 0x0111: true, 0x0117: true, 0x0122: true, 0x0124: true},
	OpFind:     {0xA700: true, 0xA900: true, 0xC000: true, 0xC001: true, 0x0110: true, 0x0122: true, 0x0124: true},
	OpRetrieve: {0xA701: true, 0xA702: true, 0xA801: true, 0xA900: true, 0xC000: true, 0xC001: true, 0x0110: true, 0x0122: true, 0x0124: true},
	OpEcho:     {0x0110: true, 0x0122: true, 0x0124: true},
}

// TestStatusTableComplete: every domain error has a row, every row is a
// domain error, and every status is a failure its service may send.
func TestStatusTableComplete(t *testing.T) {
	for _, k := range archive.Kinds {
		if _, ok := statuses[k]; !ok {
			t.Errorf("archive.%v has no row in the status table", k)
		}
	}
	if len(statuses) != len(archive.Kinds) {
		t.Errorf("the table has %d rows for %d domain errors", len(statuses), len(archive.Kinds))
	}
	for k, row := range statuses {
		for op, st := range row {
			if dimse.CategoryOf(st) != dimse.CategoryFailure {
				t.Errorf("%v in %s: status %04X is not a failure", k, opNames[op], st)
			}
			if !allowed[op][st] {
				t.Errorf("%v in %s: status %04X (%s) is not one PS3.4/PS3.7 give %s", k, opNames[op], st, dimse.StatusName(st), opNames[op])
			}
		}
	}
}

// TestStatusToday pins the statuses Ward answered with before the archive
// had domain errors (when it built DIMSE statuses itself): each error the
// archive, the policy guard and the audit gate return keeps its status.
func TestStatusToday(t *testing.T) {
	for _, c := range []struct {
		op   Op
		kind error
		want uint16
		was  string // what answered it before
	}{
		{OpStore, archive.ErrCannotUnderstand, 0xC000, "unknown transfer syntax, a data set that does not parse"},
		{OpStore, archive.ErrDuplicate, 0x0111, "on_duplicate = reject"},
		{OpStore, archive.ErrAttributeMismatch, 0xA900, "SOP Instance UID differs from the command"},
		{OpStore, archive.ErrInvalidAttribute, 0xC000, "a UID with a bad component, pixel data not in its syntax"},
		{OpStore, archive.ErrNoSpace, 0xA700, "min_free reserve, ENOSPC"},
		{OpStore, archive.ErrStorage, 0xA700, "blob or index write failed"},
		{OpStore, archive.ErrNotAuthorized, 0x0124, "the guard: no store permission"},
		{OpStore, archive.ErrAuditUnavailable, 0xA700, "the audit gate"},
		{OpFind, archive.ErrInvalidIdentifier, 0xA900, "bad identifier"},
		{OpFind, archive.ErrNotAuthorized, 0x0124, "universal query without bulk-query; the guard"},
		{OpFind, archive.ErrTooManyResults, 0xA700, "more matches than the cap"},
		{OpFind, archive.ErrStorage, 0xC001, "the index query failed"},
		{OpFind, archive.ErrUnavailable, 0xA700, "was C001 (as ErrStorage): an index outage is transient"},
		{OpStore, archive.ErrUnavailable, 0xA700, "as ErrStorage"},
		{OpRetrieve, archive.ErrUnavailable, 0xA701, "as ErrStorage"},
		{OpFind, archive.ErrNotSupported, 0xC001, "the index cannot serve queries"},
		{OpFind, archive.ErrAuditUnavailable, 0xA700, "the audit gate"},
		{OpRetrieve, archive.ErrInvalidIdentifier, 0xA900, "bad identifier, a universal retrieve"},
		{OpRetrieve, archive.ErrStorage, 0xA701, "the index query failed"},
		{OpRetrieve, archive.ErrNotSupported, 0xC001, "the index cannot serve retrieves"},
		{OpRetrieve, archive.ErrNotAuthorized, 0x0124, "the guard: no move/get permission"},
		{OpRetrieve, archive.ErrAuditUnavailable, 0xA701, "the audit gate"},
		{OpRetrieve, archive.ErrUnknownDestination, 0xA801, "the dispatcher, for an unknown destination"},
		{OpEcho, archive.ErrNotAuthorized, 0x0124, "the guard: no echo permission"},
	} {
		t.Run(opNames[c.op]+"/"+c.kind.Error(), func(t *testing.T) {
			err := Status(c.op, archive.Fail(c.kind, "why"))
			var se *dimse.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Status = %v, want a *dimse.StatusError", err)
			}
			if se.Status != c.want {
				t.Errorf("status %04X (%s), was %04X (%s) for %s", se.Status, dimse.StatusName(se.Status), c.want, dimse.StatusName(c.want), c.was)
			}
			if se.Comment != "why" {
				t.Errorf("comment %q, want the error's", se.Comment)
			}
		})
	}
}

func TestStatusMapping(t *testing.T) {
	if Status(OpStore, nil) != nil {
		t.Error("nil is not nil")
	}
	cause := errors.New("disk on fire")
	e := &archive.Error{Kind: archive.ErrAttributeMismatch, Comment: "the data set has no SOPClassUID", Tag: dicom.SOPClassUID, Err: cause}
	var se *dimse.StatusError
	if !errors.As(Status(OpStore, fmt.Errorf("wrapped: %w", e)), &se) {
		t.Fatal("a wrapped domain error is not mapped")
	}
	if se.Status != dimse.StatusDataSetMismatch || se.Comment != e.Comment || len(se.Offending) != 1 || se.Offending[0] != uint32(dicom.SOPClassUID) || se.Err != cause {
		t.Errorf("mapped to %+v", se)
	}
	// No comment: the kind names the failure.
	if !errors.As(Status(OpFind, &archive.Error{Kind: archive.ErrStorage}), &se) || se.Comment == "" || se.Offending != nil {
		t.Errorf("without a comment: %+v", se)
	}
	// Errors that are not the archive's pass through, for the dispatcher.
	for _, err := range []error{context.Canceled, io.ErrUnexpectedEOF, &dimse.StatusError{Status: dimse.StatusCancel}} {
		if got := Status(OpFind, err); got != err {
			t.Errorf("Status(%v) = %v, want it unchanged", err, got)
		}
	}
}

// fakeService answers with what the test sets, and records the principal.
type fakeService struct {
	err    error
	stored *archive.Stored
	match  archive.Match
	inst   *archive.Instance
	got    *archive.Principal
	gotRq  *archive.RetrieveRequest
}

func (f *fakeService) Echo(ctx context.Context) error {
	f.got = archive.PrincipalFrom(ctx)
	return f.err
}

func (f *fakeService) Store(ctx context.Context, r *archive.StoreRequest) (*archive.Stored, error) {
	f.got = archive.PrincipalFrom(ctx)
	return f.stored, f.err
}

func (f *fakeService) Query(ctx context.Context, q *archive.Query, emit func(archive.Match) error) error {
	f.got = archive.PrincipalFrom(ctx)
	if err := emit(f.match); err != nil {
		return err
	}
	return f.err
}

func (f *fakeService) Retrieve(ctx context.Context, r *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	f.got, f.gotRq = archive.PrincipalFrom(ctx), r
	if f.inst != nil {
		if err := each(f.inst); err != nil {
			return err
		}
	}
	return f.err
}

func (f *fakeService) Destination(ctx context.Context, aeTitle string) (string, error) {
	return "", archive.Failf(archive.ErrUnknownDestination, "%q is not a registered peer", aeTitle)
}

// TestAdapter: the front end translates requests and results both ways.
func TestAdapter(t *testing.T) {
	ctx := context.Background()
	f := &fakeService{stored: &archive.Stored{StudyInstanceUID: "1.2", PatientID: "P", Replaced: true}}
	s := &Service{Archive: f}
	sr := &dimse.StoreRequest{SOPClassUID: "1.2.3", SOPInstanceUID: "1.2.3.4", Data: strings.NewReader("")}
	if err := s.Store(ctx, sr); err != nil {
		t.Fatal(err)
	}
	f.stored, f.err = nil, archive.Fail(archive.ErrDuplicate, "SOP instance already stored")
	var se *dimse.StatusError
	if err := s.Store(ctx, sr); !errors.As(err, &se) || se.Status != dimse.StatusDuplicateSOPInstance {
		t.Errorf("duplicate: %v", err)
	}

	f.err, f.match = nil, archive.Match{DataSet: &dicom.DataSet{}, KeysIgnored: true}
	fr := &dimse.FindRequest{SOPClassUID: dimse.StudyRootFind}
	n := 0
	if err := s.Find(ctx, fr, func(*dicom.DataSet) error { n++; return nil }); err != nil || n != 1 || !fr.PendingWarning {
		t.Errorf("find: %v, %d matches, pending warning %v", err, n, fr.PendingWarning)
	}
	if err := s.Find(ctx, &dimse.FindRequest{SOPClassUID: "1.2.3"}, nil); !errors.As(err, &se) || se.Status != dimse.StatusSOPClassNotSupported {
		t.Errorf("find on a non-Q/R class: %v", err)
	}

	// The sub-operations' outcomes reach the archive's Delivered, the
	// dispatcher's "not attempted" as the archive's.
	var outcomes []error
	f.inst = &archive.Instance{SOPInstanceUID: "1.2.3.4", Size: 7, Delivered: func(err error) { outcomes = append(outcomes, err) }}
	insts, err := s.Retrieve(ctx, &dimse.RetrieveRequest{SOPClassUID: dimse.PatientRootMove, MoveDestination: "DEST", MoveDestinationAddr: "127.0.0.2:104"})
	if err != nil || len(insts) != 1 || insts[0].SOPInstanceUID != "1.2.3.4" || insts[0].Size != 7 || insts[0].Delivered == nil {
		t.Fatalf("retrieve: %v, %+v", err, insts)
	}
	insts[0].Delivered(nil)
	insts[0].Delivered(dimse.ErrNotAttempted)
	if len(outcomes) != 2 || outcomes[0] != nil || !errors.Is(outcomes[1], archive.ErrNotAttempted) {
		t.Errorf("delivery outcomes: %v", outcomes)
	}
	if f.gotRq.Model != archive.PatientRoot || f.gotRq.Destination != "DEST" || f.gotRq.DestinationAddr != "127.0.0.2:104" {
		t.Errorf("retrieve request: %+v", f.gotRq)
	}
	if _, err := s.Destination(ctx, &dimse.RetrieveRequest{MoveDestination: "NOBODY"}); !errors.Is(err, dimse.ErrUnknownDestination) || !strings.Contains(err.Error(), "NOBODY") {
		t.Errorf("unknown destination: %v", err)
	}

	// The principal of the association reaches the service; without a
	// hook, the context's own does.
	p := &archive.Principal{Kind: archive.Peer, Name: "CALLER"}
	if err := s.Echo(archive.WithPrincipal(ctx, p), &dimse.Request{}); err != nil || f.got != p {
		t.Errorf("echo: %v, principal %+v", err, f.got)
	}
}

// TestStatusCommentsFit: every comment the table answers with fits an
// Error Comment (64 characters, VR LO), for every kind and service: the
// kind's own text where the error has no comment, the archive's comments
// as they are (archive TestCommentsFit checks those it writes), and an
// over-long one cut at a character boundary when encoded.
func TestStatusCommentsFit(t *testing.T) {
	long := "store unavailable, try again later (" + strings.Repeat("é", 40) + ")"
	for _, k := range archive.Kinds {
		for op := range opNames {
			for _, comment := range []string{"", "store unavailable, try again later (committing the index)", long} {
				var se *dimse.StatusError
				if !errors.As(Status(Op(op), &archive.Error{Kind: k, Comment: comment}), &se) {
					t.Fatalf("%v in %s: not a status", k, opNames[op])
				}
				if comment != long && len(se.Comment) > dimse.MaxLO {
					t.Errorf("%v in %s: comment %q is %d characters", k, opNames[op], se.Comment, len(se.Comment))
				}
				rsp := &dimse.Command{CommandField: dimse.CFindRSP, MessageIDBeingRespondedTo: 1, CommandDataSetType: dimse.NoDataSet,
					Status: se.Status, ErrorComment: se.Comment, AffectedSOPClassUID: "1.2.3"}
				back, err := dimse.DecodeCommand(rsp.Encode())
				if err != nil {
					t.Fatal(err)
				}
				if len(back.ErrorComment) > dimse.MaxLO || !utf8.ValidString(back.ErrorComment) || !strings.HasPrefix(se.Comment, back.ErrorComment) {
					t.Errorf("%v in %s: comment %q sent as %q", k, opNames[op], se.Comment, back.ErrorComment)
				}
			}
		}
	}
}
