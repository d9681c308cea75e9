package server

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimsearchive"
)

// instService retrieves its instances and then returns err.
type instService struct {
	okService
	insts []*archive.Instance
	err   error
}

func (s *instService) Retrieve(_ context.Context, _ *archive.RetrieveRequest, each func(*archive.Instance) error) error {
	for _, in := range s.insts {
		if err := each(in); err != nil {
			return err
		}
	}
	return s.err
}

func (s *instService) Destination(_ context.Context, ae string) (string, error) {
	if ae == "DEST" {
		return "127.0.0.2:104", nil
	}
	return "", archive.Failf(archive.ErrUnknownDestination, "%q is not a registered peer", ae)
}

func recording() (*[]*audit.Message, func(*audit.Message)) {
	var got []*audit.Message
	return &got, func(m *audit.Message) { got = append(got, m) }
}

func names(ms []*audit.Message) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name())
	}
	return strings.Join(out, ",")
}

// TestAuditedRetrieve: a retrieve is Begin Transferring once found, and
// Instances Transferred once every instance's delivery is reported,
// counting those sent; a failure makes it a minor failure, instances not
// attempted are not counted, nothing sent and nothing failed is no
// record; a refused move destination is a Security Alert.
func TestAuditedRetrieve(t *testing.T) {
	ward := func() audit.Node { return audit.Node{AETitle: "WARD"} }
	ctx := archive.WithOrigin(archive.WithPrincipal(context.Background(),
		&archive.Principal{Kind: archive.Peer, Name: "VIEWER", User: "carol"}), archive.Origin{AETitle: "VIEWER", Addr: "127.0.0.9:4000"})
	inst := func(uid string) *archive.Instance {
		return &archive.Instance{SOPClassUID: ctImageStorage, SOPInstanceUID: uid, StudyInstanceUID: "1.2.3", PatientID: "P1"}
	}
	for _, c := range []struct {
		name     string
		outcomes []error
		want     string // records after the deliveries
		outcome  int
		count    string
	}{
		{"all sent", []error{nil, nil, nil}, "begin-transferring,instances-transferred", audit.OutcomeSuccess, `NumberOfInstances="3"`},
		{"one failed", []error{nil, errors.New("status 0xA700"), nil}, "begin-transferring,instances-transferred", audit.OutcomeMinorFailure, `NumberOfInstances="2"`},
		{"cancelled after one", []error{nil, archive.ErrNotAttempted, archive.ErrNotAttempted}, "begin-transferring,instances-transferred", audit.OutcomeSuccess, `NumberOfInstances="1"`},
		{"none attempted", []error{archive.ErrNotAttempted, archive.ErrNotAttempted, archive.ErrNotAttempted}, "begin-transferring", 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, rec := recording()
			svc := &instService{insts: []*archive.Instance{inst("1.2.3.1"), inst("1.2.3.2"), inst("1.2.3.3")}}
			a := audited{svc: svc, rec: rec, ward: ward}
			var given []*archive.Instance
			err := a.Retrieve(ctx, &archive.RetrieveRequest{Model: archive.StudyRoot, Destination: "DEST", DestinationAddr: "127.0.0.2:104"}, func(in *archive.Instance) error {
				given = append(given, in)
				return nil
			})
			if err != nil || len(given) != 3 || names(*got) != "begin-transferring" {
				t.Fatalf("Retrieve = %v, %d instances, records %s", err, len(given), names(*got))
			}
			for i, in := range given {
				if i == len(given)-1 && len(*got) != 1 {
					t.Fatalf("recorded before the last delivery: %s", names(*got))
				}
				in.Delivered(c.outcomes[i])
			}
			if names(*got) != c.want {
				t.Fatalf("records %s, want %s", names(*got), c.want)
			}
			begin, _ := (*got)[0].Marshal()
			if !strings.Contains(string(begin), `UserID="DEST"`) || !strings.Contains(string(begin), `NetworkAccessPointID="127.0.0.2"`) ||
				!strings.Contains(string(begin), `UserID="VIEWER" AlternativeUserID="carol"`) {
				t.Errorf("begin transferring: %s", begin)
			}
			if len(*got) == 2 {
				m := (*got)[1]
				x, _ := m.Marshal()
				if m.Event.Outcome != c.outcome || m.Event.Action != audit.ActionRead || !strings.Contains(string(x), c.count) {
					t.Errorf("instances transferred: %s", x)
				}
			}
		})
	}
	t.Run("metadata", func(t *testing.T) {
		// A retrieve of metadata is Instances Accessed (read), counted
		// like a transfer, with no Begin Transferring.
		got, rec := recording()
		svc := &instService{insts: []*archive.Instance{inst("1.2.3.1"), inst("1.2.3.2")}}
		a := audited{svc: svc, rec: rec, ward: ward}
		var given []*archive.Instance
		err := a.Retrieve(ctx, &archive.RetrieveRequest{Model: archive.StudyRoot, Metadata: true}, func(in *archive.Instance) error {
			given = append(given, in)
			return nil
		})
		if err != nil || len(*got) != 0 {
			t.Fatalf("Retrieve = %v, records %s", err, names(*got))
		}
		given[0].Delivered(nil)
		given[1].Delivered(nil)
		if names(*got) != "instances-accessed" {
			t.Fatalf("records %s, want instances-accessed", names(*got))
		}
		m := (*got)[0]
		x, _ := m.Marshal()
		if m.Event.Action != audit.ActionRead || !strings.Contains(string(x), `NumberOfInstances="2"`) ||
			!strings.Contains(string(x), `UserID="VIEWER" AlternativeUserID="carol"`) {
			t.Errorf("instances accessed: %s", x)
		}
	})
	t.Run("refused destination", func(t *testing.T) {
		got, rec := recording()
		a := audited{svc: &instService{}, rec: rec, ward: ward}
		if _, err := a.Destination(ctx, "NOBODY"); archive.KindOf(err) != archive.ErrUnknownDestination {
			t.Fatalf("Destination: %v", err)
		}
		if names(*got) != "security-alert" || !strings.Contains((*got)[0].Event.Description, `retrieve to NOBODY refused: "NOBODY" is not a registered peer`) {
			t.Errorf("records %s: %+v", names(*got), *got)
		}
	})
	t.Run("refused retrieve", func(t *testing.T) {
		got, rec := recording()
		a := audited{svc: &instService{err: archive.Fail(archive.ErrNotAuthorized, "not authorized: this peer lacks get")}, rec: rec, ward: ward}
		if err := a.Retrieve(ctx, &archive.RetrieveRequest{Model: archive.StudyRoot}, nil); archive.KindOf(err) != archive.ErrNotAuthorized {
			t.Fatalf("Retrieve: %v", err)
		}
		if names(*got) != "security-alert" || !strings.Contains((*got)[0].Event.Description, "retrieve refused: not authorized") {
			t.Errorf("records %s", names(*got))
		}
	})
}

// TestAuditedStoreSession: stores in a session are one record when it
// ends (failures make it a minor failure); without a session, or after
// its end, each store is its own record.
func TestAuditedStoreSession(t *testing.T) {
	got, rec := recording()
	svc := &storeService{}
	a := audited{svc: svc, rec: rec, ward: func() audit.Node { return audit.Node{AETitle: "WARD"} }}
	ctx, session := archive.WithSession(context.Background())
	rq := &archive.StoreRequest{Origin: archive.Origin{AETitle: "MODALITY", Addr: "127.0.0.3:5000"}, SOPClassUID: ctImageStorage}
	for i := range 3 {
		svc.fail = i == 2
		a.Store(ctx, rq)
	}
	if len(*got) != 0 {
		t.Fatalf("recorded before the session ended: %s", names(*got))
	}
	session.End()
	if names(*got) != "instances-transferred" || (*got)[0].Event.Outcome != audit.OutcomeMinorFailure {
		t.Fatalf("records %s", names(*got))
	}
	if x, _ := (*got)[0].Marshal(); !strings.Contains(string(x), `NumberOfInstances="2"`) || !strings.Contains(string(x), `UserID="MODALITY"`) {
		t.Errorf("record: %s", x)
	}
	svc.fail = false
	a.Store(ctx, rq) // the session has ended
	a.Store(context.Background(), rq)
	if names(*got) != "instances-transferred,instances-transferred,instances-transferred" {
		t.Errorf("records %s", names(*got))
	}
}

type storeService struct {
	okService
	fail bool
}

func (s *storeService) Store(context.Context, *archive.StoreRequest) (*archive.Stored, error) {
	if s.fail {
		return nil, archive.Fail(archive.ErrNoSpace, "no space")
	}
	return &archive.Stored{StudyInstanceUID: "1.2.3", PatientID: "P1"}, nil
}

// TestAuditedRefused: requests the DIMSE dispatcher refuses before they
// reach the service are recorded as the service's refusals are: a store
// is a failed one in the session's Instances Transferred, a query a
// failed Query (with its identifier when decoded), a retrieve a Security
// Alert.
func TestAuditedRefused(t *testing.T) {
	ward := func() audit.Node { return audit.Node{AETitle: "WARD"} }
	peer := &archive.Principal{Kind: archive.Peer, Name: "MODALITY", User: "dave"}
	refusal := func(field uint16, class, dest string, ident *dicom.DataSet, comment string) *dimse.Refusal {
		return &dimse.Refusal{
			Request:    dimse.Request{Command: &dimse.Command{CommandField: field, AffectedSOPClassUID: class, AffectedSOPInstanceUID: "1.2..3", MoveDestination: dest}},
			Identifier: ident,
			Status:     &dimse.StatusError{Status: dimse.StatusDataSetMismatch, Comment: comment},
		}
	}
	base := archive.WithOrigin(archive.WithPrincipal(context.Background(), peer), archive.Origin{AETitle: "MODALITY", Addr: "127.0.0.3:5000"})

	t.Run("store", func(t *testing.T) {
		got, rec := recording()
		a := audited{svc: &storeService{}, rec: rec, ward: ward}
		fe := &dimsearchive.Service{Archive: a}
		ctx, session := archive.WithSession(base)
		a.Store(ctx, &archive.StoreRequest{SOPClassUID: ctImageStorage})
		fe.Refused(ctx, refusal(dimse.CStoreRQ, ctImageStorage, "", nil, "Affected SOP Instance UID has an empty component"))
		if len(*got) != 0 {
			t.Fatalf("recorded before the session ended: %s", names(*got))
		}
		session.End()
		if names(*got) != "instances-transferred" || (*got)[0].Event.Outcome != audit.OutcomeMinorFailure {
			t.Fatalf("records %s", names(*got))
		}
		if x, _ := (*got)[0].Marshal(); !strings.Contains(string(x), `NumberOfInstances="1"`) || !strings.Contains(string(x), `UserID="MODALITY" AlternativeUserID="dave"`) {
			t.Errorf("record: %s", x)
		}
		// Without a session, the refusal is a record of its own: nothing
		// stored, one failed.
		fe.Refused(base, refusal(dimse.CStoreRQ, ctImageStorage, "", nil, "C-STORE-RQ without a data set"))
		if names(*got) != "instances-transferred,instances-transferred" || (*got)[1].Event.Outcome != audit.OutcomeMinorFailure {
			t.Errorf("records %s", names(*got))
		}
	})
	t.Run("query", func(t *testing.T) {
		got, rec := recording()
		a := audited{svc: &okService{}, rec: rec, ward: ward}
		fe := &dimsearchive.Service{Archive: a}
		id := &dicom.DataSet{}
		id.Set(dicom.PatientID, "P1")
		fe.Refused(base, refusal(dimse.CFindRQ, dimse.StudyRootFind, "", id, "identifier without Query/Retrieve Level (0008,0052)"))
		fe.Refused(base, refusal(dimse.CFindRQ, dimse.StudyRootMove, "", nil, "C-FIND-RQ on SOP class "+dimse.StudyRootMove))
		if names(*got) != "query,query" {
			t.Fatalf("records %s", names(*got))
		}
		want, _ := id.Bytes(dicom.ExplicitVRLittleEndian)
		for i, m := range *got {
			o := m.Objects[0]
			if m.Event.Outcome != audit.OutcomeMinorFailure || m.Event.Description == "" {
				t.Errorf("query %d: outcome %d, description %q", i, m.Event.Outcome, m.Event.Description)
			}
			wantQuery, wantClass := base64.StdEncoding.EncodeToString(want), dimse.StudyRootFind
			if i == 1 {
				wantQuery, wantClass = "", dimse.StudyRootMove
			}
			if o.Query != wantQuery || o.ID != wantClass {
				t.Errorf("query %d: object %s, query %q; want %s, %q", i, o.ID, o.Query, wantClass, wantQuery)
			}
		}
		if !strings.Contains((*got)[0].Event.Description, "without Query/Retrieve Level") {
			t.Errorf("description %q", (*got)[0].Event.Description)
		}
	})
	t.Run("retrieve", func(t *testing.T) {
		got, rec := recording()
		a := audited{svc: &instService{}, rec: rec, ward: ward}
		fe := &dimsearchive.Service{Archive: a}
		fe.Refused(base, refusal(dimse.CMoveRQ, dimse.StudyRootMove, "DEST", nil, "identifier cannot be decoded: short"))
		fe.Refused(base, refusal(dimse.CGetRQ, dimse.StudyRootGet, "", nil, "C-GET-RQ without an identifier"))
		if names(*got) != "security-alert,security-alert" {
			t.Fatalf("records %s", names(*got))
		}
		if d := (*got)[0].Event.Description; d != "retrieve to DEST refused: identifier cannot be decoded: short" {
			t.Errorf("move: %q", d)
		}
		if d := (*got)[1].Event.Description; d != "retrieve refused: C-GET-RQ without an identifier" {
			t.Errorf("get: %q", d)
		}
		if x, _ := (*got)[1].Marshal(); !strings.Contains(string(x), `UserID="MODALITY" AlternativeUserID="dave"`) {
			t.Errorf("record: %s", x)
		}
	})
}
