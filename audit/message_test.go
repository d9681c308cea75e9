package audit

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"testing"
	"time"
)

// TestAccessMessages checks the A.5.3.5, A.5.3.6 and A.5.3.8 messages:
// event codes and action, participants (who asked, Ward, the media),
// study and patient objects, and the index fields the log keeps.
func TestAccessMessages(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	admin := Node{AETitle: "alice", Addr: "10.0.0.7"}
	st := &Study{UID: "1.2.3", PatientID: "PID1", Classes: map[string]int{"1.2.840.10008.5.1.4.1.1.2": 2, "1.2.840.10008.5.1.4.1.1.4": 1}}
	st2 := &Study{UID: "1.2.4", PatientID: "PID2", Classes: map[string]int{"1.2.840.10008.5.1.4.1.1.2": 1}}
	studyObj := `<ParticipantObjectIdentification ParticipantObjectID="1.2.3" ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="110180" codeSystemName="DCM" originalText="Study Instance UID"></ParticipantObjectIDTypeCode><ParticipantObjectDetail type="NumberOfInstances" value="Mw=="></ParticipantObjectDetail><ParticipantObjectDescription><SOPClass UID="1.2.840.10008.5.1.4.1.1.2" NumberOfInstances="2"></SOPClass><SOPClass UID="1.2.840.10008.5.1.4.1.1.4" NumberOfInstances="1"></SOPClass></ParticipantObjectDescription>`
	patientObj := `<ParticipantObjectIdentification ParticipantObjectID="PID1" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number">`
	adminP := `<ActiveParticipant UserID="alice" UserIsRequestor="true" NetworkAccessPointID="10.0.0.7" NetworkAccessPointTypeCode="2"></ActiveParticipant>`
	wardApp := `<ActiveParticipant UserID="WARD" UserIsRequestor="false" NetworkAccessPointID="127.0.0.1" NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="110150"`
	tests := []struct {
		name     string
		m        *Message
		event    string
		want     []string
		peers    string
		patients string
	}{
		{
			name:  "accessed-update",
			m:     InstancesAccessed(ward, admin, ActionUpdate, OutcomeSuccess, []*Study{st}, "", at),
			event: "instances-accessed",
			want: []string{
				`<EventIdentification EventActionCode="U" EventDateTime="2026-01-02T03:04:05Z" EventOutcomeIndicator="0"><EventID csd-code="110103" codeSystemName="DCM" originalText="DICOM Instances Accessed"></EventID></EventIdentification>`,
				adminP, wardApp, studyObj, patientObj,
			},
			peers: "[alice]", patients: "[PID1]",
		},
		{
			name:  "accessed-delete-by-ward",
			m:     InstancesAccessed(ward, ward, ActionDelete, OutcomeMinorFailure, []*Study{st}, "retention: 1 instance not deleted", at),
			event: "instances-accessed",
			want: []string{
				`EventActionCode="D"`, `EventOutcomeIndicator="4"`,
				`<EventOutcomeDescription>retention: 1 instance not deleted</EventOutcomeDescription>`,
				`<ActiveParticipant UserID="WARD" UserIsRequestor="true"`,
			},
			peers: "[]", patients: "[PID1]",
		},
		{
			name:  "study-deleted",
			m:     StudyDeleted(ward, admin, OutcomeSuccess, []*Study{st}, "", at),
			event: "study-deleted",
			want: []string{
				`<EventIdentification EventActionCode="D" EventDateTime="2026-01-02T03:04:05Z" EventOutcomeIndicator="0"><EventID csd-code="110105" codeSystemName="DCM" originalText="DICOM Study Deleted"></EventID></EventIdentification>`,
				adminP, wardApp, studyObj, patientObj,
			},
			peers: "[alice]", patients: "[PID1]",
		},
		{
			name:  "export",
			m:     Export(ward, admin, Media{ID: "/media/usb0", Type: MediaUSB}, OutcomeSuccess, []*Study{st2, st}, at),
			event: "export",
			want: []string{
				`<EventIdentification EventActionCode="R" EventDateTime="2026-01-02T03:04:05Z" EventOutcomeIndicator="0"><EventID csd-code="110106" codeSystemName="DCM" originalText="Export"></EventID></EventIdentification>`,
				adminP,
				`<ActiveParticipant UserID="WARD" UserIsRequestor="false" NetworkAccessPointID="127.0.0.1" NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="110153" codeSystemName="DCM" originalText="Source Role ID"></RoleIDCode></ActiveParticipant>`,
				`<ActiveParticipant UserID="/media/usb0" UserIsRequestor="false"><RoleIDCode csd-code="110154" codeSystemName="DCM" originalText="Destination Media"></RoleIDCode><MediaIdentifier><MediaType csd-code="110030" codeSystemName="DCM" originalText="USB Disk Emulation"></MediaType></MediaIdentifier></ActiveParticipant>`,
				studyObj, patientObj,
				`ParticipantObjectID="PID2" ParticipantObjectTypeCode="1"`,
			},
			peers: "[alice /media/usb0]", patients: "[PID1 PID2]",
		},
		{
			name:  "export-scheduled-over-network",
			m:     Export(ward, Node{}, Media{ID: "https://archive.example/upload", Type: MediaURI, Addr: "192.0.2.1"}, OutcomeSuccess, []*Study{st}, at),
			event: "export",
			want: []string{
				`<ActiveParticipant UserID="WARD" UserIsRequestor="true"`,
				`<ActiveParticipant UserID="https://archive.example/upload" UserIsRequestor="false" NetworkAccessPointID="192.0.2.1" NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="110154"`,
			},
			peers: "[https://archive.example/upload]", patients: "[PID1]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !bytes.Contains(b, []byte(w)) {
					t.Errorf("missing %s\nin %s", w, b)
				}
			}
			var back Message
			if err := xml.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.Name() != tt.event || fmt.Sprint(back.Peers()) != tt.peers || fmt.Sprint(back.Patients()) != tt.patients {
				t.Errorf("round trip: name %s peers %v patients %v; want %s %s %s", back.Name(), back.Peers(), back.Patients(), tt.event, tt.peers, tt.patients)
			}
			// The log's index fields.
			dir := t.TempDir()
			l, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Write(tt.m); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			var r Record
			if err := jsonUnmarshal(readLines(t, dir)[0], &r); err != nil {
				t.Fatal(err)
			}
			if r.Event != tt.event || fmt.Sprint(r.Patients) != tt.patients {
				t.Errorf("record: %s %v", r.Event, r.Patients)
			}
		})
	}
}

func TestByPatient(t *testing.T) {
	a1 := &Study{UID: "1", PatientID: "B"}
	a2 := &Study{UID: "2", PatientID: "A"}
	a3 := &Study{UID: "3", PatientID: "B"}
	got := ByPatient([]*Study{a1, a2, a3})
	if len(got) != 2 || len(got[0]) != 1 || got[0][0] != a2 || len(got[1]) != 2 || got[1][0] != a1 || got[1][1] != a3 {
		t.Fatalf("ByPatient: %v", got)
	}
	for _, g := range got {
		m := StudyDeleted(ward, ward, OutcomeSuccess, g, "", time.Now())
		if len(m.Patients()) != 1 {
			t.Errorf("one patient per message: %v", m.Patients())
		}
	}
}
