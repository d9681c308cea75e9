package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
)

// webLike is a front end made for the test: no protocol, only the service
// every front end gets (Server.service), called as a signed-in user the
// way the DICOMweb front end will: a session per request, the user's
// principal and the client's address in the context.
type webLike struct {
	svc  archive.Service
	user *archive.Principal
	addr string
}

func (w *webLike) ctx() context.Context {
	ctx := archive.WithPrincipal(context.Background(), w.user)
	return archive.WithOrigin(ctx, archive.Origin{Addr: w.addr, Conn: "test " + w.user.Name})
}

// stow stores objects in one request (one session).
func (w *webLike) stow(objs ...[]byte) error {
	ctx, session := archive.WithSession(w.ctx())
	defer session.End()
	for _, b := range objs {
		ds, err := dicom.ReadDataSet(bytes.NewReader(b), dicom.ExplicitVRLittleEndian, int64(len(b)))
		if err != nil {
			return err
		}
		_, err = w.svc.Store(ctx, &archive.StoreRequest{Origin: archive.Origin{Addr: w.addr},
			SOPClassUID: ds.String(dicom.SOPClassUID), SOPInstanceUID: ds.String(dicom.SOPInstanceUID),
			TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID, Data: bytes.NewReader(b)})
		if err != nil {
			return err
		}
	}
	return nil
}

// qido finds the studies of a patient.
func (w *webLike) qido(patientID string) ([]string, error) {
	id := &dicom.DataSet{}
	id.Set(dicom.QueryRetrieveLevel, "STUDY")
	id.Set(dicom.PatientID, patientID)
	id.Set(dicom.StudyInstanceUID, "")
	var got []string
	err := w.svc.Query(w.ctx(), &archive.Query{Model: archive.StudyRoot, Identifier: id, Limit: 100}, func(m archive.Match) error {
		got = append(got, m.DataSet.String(dicom.StudyInstanceUID))
		return nil
	})
	return got, err
}

// wado reads every object of a study, reporting each delivery.
func (w *webLike) wado(study string) (int, error) {
	id := &dicom.DataSet{}
	id.Set(dicom.QueryRetrieveLevel, "STUDY")
	id.Set(dicom.StudyInstanceUID, study)
	var insts []*archive.Instance
	err := w.svc.Retrieve(w.ctx(), &archive.RetrieveRequest{Model: archive.StudyRoot, Identifier: id}, func(in *archive.Instance) error {
		insts = append(insts, in)
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range insts {
		rc, err := in.Open(context.Background())
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		if err == nil {
			n++
		}
		if in.Delivered != nil {
			in.Delivered(err)
		}
	}
	return n, nil
}

// TestUserFrontEndAudited: a front end other than DIMSE stores, queries
// and retrieves through the service as a signed-in user, and the audit
// trail records each operation naming the user: the stored instances
// (one record for the request), the query, the start and end of the
// transfer, and, for a user without the find permission, the refused
// query and its security alert. Nothing of it is the front end's own code.
func TestUserFrontEndAudited(t *testing.T) {
	s, _ := testServer(t, nil, nil)
	if s.audit == nil {
		t.Fatal("the audit trail is off in the default configuration")
	}
	svc := s.service()
	alice := &webLike{svc: svc, addr: "127.0.0.1:50123", user: &archive.Principal{Kind: archive.User, Name: "alice",
		Roles: []string{"radiologist"}, Grant: archive.Permissions{archive.PermStore: true, archive.PermFind: true, archive.PermGet: true}}}
	ct := newSyntheticCT(t, 64)
	a, _ := ct.instance(1)
	b, _ := ct.instance(2)
	if err := alice.stow(a, b); err != nil {
		t.Fatalf("store: %v", err)
	}
	studies, err := alice.qido("BENCH-1")
	if err != nil || len(studies) != 1 || studies[0] != uidPrefix+"1" {
		t.Fatalf("query: %v, %v", studies, err)
	}
	if n, err := alice.wado(studies[0]); err != nil || n != 2 {
		t.Fatalf("retrieve: %d objects, %v", n, err)
	}
	bob := &webLike{svc: svc, addr: "127.0.0.1:50124", user: &archive.Principal{Kind: archive.User, Name: "bob",
		Grant: archive.Permissions{archive.PermGet: true}}}
	if _, err := bob.qido("BENCH-1"); !errors.Is(err, archive.ErrNotAuthorized) {
		t.Fatalf("query without find: %v, want ErrNotAuthorized", err)
	}

	if err := s.audit.Sync(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(s.audit.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []*audit.Record
	if err := audit.Each(f, func(r *audit.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	find := func(event, user string, outcome int, in ...string) *audit.Record {
		for _, r := range recs {
			if r.Event != event || r.Outcome != outcome || !slices.Contains(r.Peers, user) {
				continue
			}
			ok := strings.Contains(r.XML, `UserID="`+user+`"`)
			for _, s := range in {
				ok = ok && strings.Contains(r.XML, s)
			}
			if ok {
				return r
			}
		}
		t.Errorf("no %s record (outcome %d) naming %s with %q", event, outcome, user, in)
		return nil
	}
	// Stored: one record for the request, with its two instances, from
	// the user at the client's address.
	find("instances-transferred", "alice", audit.OutcomeSuccess, `NumberOfInstances="2"`, `NetworkAccessPointID="127.0.0.1"`, `EventActionCode="C"`)
	find("query", "alice", audit.OutcomeSuccess, "1.2.840.10008.5.1.4.1.2.2.1")
	find("begin-transferring", "alice", audit.OutcomeSuccess, uidPrefix+"1")
	if r := find("instances-transferred", "alice", audit.OutcomeSuccess, `EventActionCode="R"`, `NumberOfInstances="2"`); r != nil && strings.Join(r.Patients, ",") != "BENCH-1" {
		t.Errorf("instances sent: patients %v", r.Patients)
	}
	find("query", "bob", audit.OutcomeMinorFailure, "not authorized")
	find("security-alert", "bob", audit.OutcomeMinorFailure, "query refused")
	if t.Failed() {
		for _, r := range recs {
			t.Logf("%s %d %v %s", r.Event, r.Outcome, r.Peers, r.XML)
		}
	}
}
