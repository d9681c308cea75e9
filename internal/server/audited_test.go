package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
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
			err := a.Retrieve(ctx, &archive.RetrieveRequest{Model: archive.StudyRoot, Destination: "DEST"}, func(in *archive.Instance) error {
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
