// Package audit records security-relevant events as DICOM audit messages
// (PS3.15 A.5) in a local, append-only, hash-chained log.
//
// The package imports nothing of Ward's other layers: callers describe an
// event with the builders here (ApplicationActivity, Authentication,
// SecurityAlert, Query, BeginTransferring, InstancesTransferred,
// InstancesAccessed, StudyDeleted, Export) and hand the message to a Log.
// A Log can also forward every record to a collector by syslog over TLS
// (PS3.15 A.6): see WithForward.
package audit

import (
	"encoding/base64"
	"encoding/xml"
	"sort"
	"strconv"
	"time"
)

// Code is a coded value (csd-code, codeSystemName, originalText).
type Code struct {
	Code         string `xml:"csd-code,attr"`
	System       string `xml:"codeSystemName,attr"`
	OriginalText string `xml:"originalText,attr,omitempty"`
}

func dcm(code, text string) *Code { return &Code{Code: code, System: "DCM", OriginalText: text} }

// Event IDs (PS3.16 CID 400) and event type codes (CID 401..404).
var (
	EventApplicationActivity   = dcm("110100", "Application Activity")
	EventBeginTransferring     = dcm("110102", "Begin Transferring DICOM Instances")
	EventInstancesAccessed     = dcm("110103", "DICOM Instances Accessed")
	EventInstancesTransferred  = dcm("110104", "DICOM Instances Transferred")
	EventStudyDeleted          = dcm("110105", "DICOM Study Deleted")
	EventExport                = dcm("110106", "Export")
	EventQuery                 = dcm("110112", "Query")
	EventSecurityAlert         = dcm("110113", "Security Alert")
	EventUserAuthentication    = dcm("110114", "User Authentication")
	TypeApplicationStart       = dcm("110120", "Application Start")
	TypeApplicationStop        = dcm("110121", "Application Stop")
	TypeLogin                  = dcm("110122", "Login")
	TypeLogout                 = dcm("110123", "Logout")
	TypeNodeAuthentication     = dcm("110126", "Node Authentication")
	TypeAuditRecordingStopped  = dcm("110133", "Audit Recording Stopped")
	TypeAuditRecordingStarted  = dcm("110134", "Audit Recording Started")
	RoleApplication            = dcm("110150", "Application")
	RoleDestination            = dcm("110152", "Destination Role ID")
	RoleSource                 = dcm("110153", "Source Role ID")
	RoleDestinationMedia       = dcm("110154", "Destination Media")
	idTypeStudyInstanceUID     = dcm("110180", "Study Instance UID")
	idTypeSOPClassUID          = dcm("110181", "SOP Class UID")
	idTypePatientNumber        = &Code{Code: "2", System: "RFC-3881", OriginalText: "Patient Number"}
	auditSourceApplicationType = &Code{Code: "4", System: "DCM", OriginalText: "Application Server Process"}
)

// Event action codes (EventActionCode).
const (
	ActionCreate  = "C"
	ActionRead    = "R"
	ActionUpdate  = "U"
	ActionDelete  = "D"
	ActionExecute = "E"
)

// Event outcome indicators (EventOutcomeIndicator).
const (
	OutcomeSuccess      = 0
	OutcomeMinorFailure = 4
	OutcomeSeriousFail  = 8
	OutcomeMajorFailure = 12
)

// Message is an AuditMessage (PS3.15 A.5.1).
type Message struct {
	XMLName      xml.Name            `xml:"AuditMessage"`
	Event        EventIdentification `xml:"EventIdentification"`
	Participants []ActiveParticipant `xml:"ActiveParticipant"`
	Source       AuditSource         `xml:"AuditSourceIdentification"`
	Objects      []ParticipantObject `xml:"ParticipantObjectIdentification,omitempty"`
}

// EventIdentification says what happened and how it ended.
type EventIdentification struct {
	Action      string    `xml:"EventActionCode,attr"`
	DateTime    time.Time `xml:"EventDateTime,attr"`
	Outcome     int       `xml:"EventOutcomeIndicator,attr"`
	ID          *Code     `xml:"EventID"`
	Type        *Code     `xml:"EventTypeCode,omitempty"`
	Description string    `xml:"EventOutcomeDescription,omitempty"`
}

// ActiveParticipant is a process or person taking part.
type ActiveParticipant struct {
	UserID               string `xml:"UserID,attr"`
	AlternativeUserID    string `xml:"AlternativeUserID,attr,omitempty"`
	UserIsRequestor      bool   `xml:"UserIsRequestor,attr"`
	NetworkAccessPointID string `xml:"NetworkAccessPointID,attr,omitempty"`
	// NetworkAccessPointTypeCode: 1 machine name, 2 IP address.
	NetworkAccessPointTypeCode string           `xml:"NetworkAccessPointTypeCode,attr,omitempty"`
	Role                       *Code            `xml:"RoleIDCode,omitempty"`
	Media                      *MediaIdentifier `xml:"MediaIdentifier,omitempty"`
}

// MediaIdentifier names the kind of media a participant is (PS3.16 CID
// 405 Media Type Code, e.g. USB disk emulation, DVD), for Export.
type MediaIdentifier struct {
	Type *Code `xml:"MediaType"`
}

// AuditSource identifies the system that detected the event.
type AuditSource struct {
	SiteID string `xml:"AuditEnterpriseSiteID,attr,omitempty"`
	ID     string `xml:"AuditSourceID,attr"`
	Type   *Code  `xml:"AuditSourceTypeCode,omitempty"`
}

// ParticipantObject is a patient, a study or a query.
type ParticipantObject struct {
	ID          string `xml:"ParticipantObjectID,attr"`
	TypeCode    int    `xml:"ParticipantObjectTypeCode,attr"`
	TypeRole    int    `xml:"ParticipantObjectTypeCodeRole,attr"`
	IDType      *Code  `xml:"ParticipantObjectIDTypeCode"`
	Query       string `xml:"ParticipantObjectQuery,omitempty"`
	Detail      []Detail
	Description *Description `xml:"ParticipantObjectDescription,omitempty"`
}

// Detail is a ParticipantObjectDetail (value base64-encoded).
type Detail struct {
	XMLName xml.Name `xml:"ParticipantObjectDetail"`
	Type    string   `xml:"type,attr"`
	Value   string   `xml:"value,attr"`
}

// Description carries the SOP classes and instance counts of a study, and
// whether what left was de-identified (Anonymized).
type Description struct {
	SOPClasses []SOPClass `xml:"SOPClass"`
	Anonymized bool       `xml:"Anonymized,omitempty"`
}

// SOPClass is one SOP class of a study and how many of its instances.
type SOPClass struct {
	UID               string `xml:"UID,attr"`
	NumberOfInstances int    `xml:"NumberOfInstances,attr"`
}

// Node is Ward or a peer: an AE title and a network address.
type Node struct {
	AETitle string
	Addr    string // HOST:PORT or host; "" when unknown
	// ID is a process identifier (Ward: its AE title or host), optional.
	ID string
}

func (n Node) participant(requestor bool, role *Code) ActiveParticipant {
	p := ActiveParticipant{UserID: n.AETitle, AlternativeUserID: n.ID, UserIsRequestor: requestor, Role: role}
	if n.Addr != "" {
		p.NetworkAccessPointID = n.Addr
		p.NetworkAccessPointTypeCode = "2"
	}
	return p
}

// Study is a study with its instance counts per SOP class.
type Study struct {
	UID       string
	PatientID string
	// Classes counts instances per SOP Class UID.
	Classes map[string]int
	// Deidentified, when set, is the De-identification Method the
	// instances left under (PS3.15 Annex E): the study is then marked
	// Anonymized, with the method and DeidentifiedUID, the Study Instance
	// UID it left as, in ParticipantObjectDetail.
	Deidentified, DeidentifiedUID string
}

// Instances is the total instance count.
func (s *Study) Instances() int {
	n := 0
	for _, c := range s.Classes {
		n += c
	}
	return n
}

// source is Ward as the audit source: its AE title, and the node that
// recorded the event (ward.ID, the node ID) as AET@NODE, so that the
// records of the nodes of a cluster, which share one AE title, say which
// node wrote them (each node keeps its own trail).
func (ward Node) source() AuditSource {
	id := ward.AETitle
	if ward.ID != "" && ward.ID != ward.AETitle {
		id += "@" + ward.ID
	}
	return AuditSource{ID: id, Type: auditSourceApplicationType}
}

func newMessage(ward Node, id, typ *Code, action string, t time.Time, outcome int) *Message {
	return &Message{
		Event:  EventIdentification{Action: action, DateTime: t.UTC(), Outcome: outcome, ID: id, Type: typ},
		Source: ward.source(),
	}
}

// ApplicationActivity (A.5.3.1): Ward started or stopped.
func ApplicationActivity(ward Node, start bool, t time.Time) *Message {
	typ := TypeApplicationStop
	if start {
		typ = TypeApplicationStart
	}
	m := newMessage(ward, EventApplicationActivity, typ, ActionExecute, t, OutcomeSuccess)
	m.Participants = []ActiveParticipant{ward.participant(false, RoleApplication)}
	return m
}

// Authentication records an association's establishment as User
// Authentication (A.5.3.12, 110114) with type Login: success when it was
// accepted, minor failure (with the reason) when refused. The peer is the
// requestor.
func Authentication(ward, peer Node, ok bool, reason string, t time.Time) *Message {
	outcome := OutcomeSuccess
	if !ok {
		outcome = OutcomeMinorFailure
	}
	m := newMessage(ward, EventUserAuthentication, TypeLogin, ActionExecute, t, outcome)
	m.Event.Description = reason
	m.Participants = []ActiveParticipant{peer.participant(true, nil), ward.participant(false, RoleApplication)}
	return m
}

// Logout records the end of a user's session as User Authentication
// (A.5.3.12, 110114) with type Logout; reason says why (signed out,
// expired).
func Logout(ward, user Node, reason string, t time.Time) *Message {
	m := newMessage(ward, EventUserAuthentication, TypeLogout, ActionExecute, t, OutcomeSuccess)
	m.Event.Description = reason
	m.Participants = []ActiveParticipant{user.participant(true, nil), ward.participant(false, RoleApplication)}
	return m
}

// SecurityAlert (A.5.3.11, 110113) with type Node Authentication: a peer
// that was refused (wrong called AE title, unknown calling AE, ...).
func SecurityAlert(ward, peer Node, reason string, t time.Time) *Message {
	m := newMessage(ward, EventSecurityAlert, TypeNodeAuthentication, ActionExecute, t, OutcomeMinorFailure)
	m.Event.Description = reason
	m.Participants = []ActiveParticipant{peer.participant(true, nil), ward.participant(false, RoleApplication)}
	return m
}

// AuditRecordingResumed (A.5.3.11, 110113) with type Audit Recording
// Started: the audit log is written again after a time when it could not
// be; description says when and what was lost. The outcome is a serious
// failure when records were lost, a minor one otherwise (the trail was
// interrupted). Ward is the only participant.
func AuditRecordingResumed(ward Node, lost bool, description string, t time.Time) *Message {
	outcome := OutcomeMinorFailure
	if lost {
		outcome = OutcomeSeriousFail
	}
	m := newMessage(ward, EventSecurityAlert, TypeAuditRecordingStarted, ActionExecute, t, outcome)
	m.Event.Description = description
	m.Participants = []ActiveParticipant{ward.participant(false, RoleApplication)}
	return m
}

// Query (A.5.3.10, 110112): a C-FIND. identifier is the request's data
// set as received (base64 in ParticipantObjectQuery), ts its transfer
// syntax UID.
func Query(ward, peer Node, sopClass string, identifier []byte, ts string, outcome int, t time.Time) *Message {
	m := newMessage(ward, EventQuery, nil, ActionExecute, t, outcome)
	m.Participants = []ActiveParticipant{peer.participant(true, RoleSource), ward.participant(false, RoleDestination)}
	m.Objects = []ParticipantObject{{
		ID: sopClass, TypeCode: 2, TypeRole: 3, IDType: idTypeSOPClassUID,
		Query:  base64.StdEncoding.EncodeToString(identifier),
		Detail: []Detail{{Type: "TransferSyntax", Value: base64.StdEncoding.EncodeToString([]byte(ts))}},
	}}
	return m
}

// BeginTransferring (A.5.3.3, 110102): Ward starts sending instances for a
// C-MOVE or C-GET. from is the sender (Ward), to the receiver.
// requestor is the peer that asked (the C-MOVE or C-GET SCU); it is one
// more participant when it is neither from nor to.
func BeginTransferring(ward, from, to, requestor Node, studies []*Study, t time.Time) *Message {
	m := newMessage(ward, EventBeginTransferring, nil, ActionExecute, t, OutcomeSuccess)
	m.Participants = transferParticipants(from, to, requestor)
	m.Objects = studyObjects(studies)
	return m
}

func transferParticipants(from, to, requestor Node) []ActiveParticipant {
	ps := []ActiveParticipant{from.participant(requestor == from, RoleSource), to.participant(requestor == to, RoleDestination)}
	if requestor != from && requestor != to {
		ps = append(ps, requestor.participant(true, nil))
	}
	return ps
}

// InstancesTransferred (A.5.3.7, 110104): the instances of one
// association in one direction, counted per study. action is ActionCreate
// for instances Ward received, ActionRead for instances it sent.
func InstancesTransferred(ward, from, to, requestor Node, action string, outcome int, studies []*Study, t time.Time) *Message {
	m := newMessage(ward, EventInstancesTransferred, nil, action, t, outcome)
	m.Participants = transferParticipants(from, to, requestor)
	m.Objects = studyObjects(studies)
	return m
}

// Media type codes (PS3.16 CID 405) for an Export's destination.
var (
	MediaUSB   = dcm("110030", "USB Disk Emulation")
	MediaEmail = dcm("110031", "Email")
	MediaCD    = dcm("110032", "CD")
	MediaDVD   = dcm("110033", "DVD")
	MediaURI   = dcm("110037", "URI")
)

// Media is where an Export wrote the instances: the Destination Media
// participant of A.5.3.5.
type Media struct {
	// ID names the media or the destination: a volume label, a path, a URL.
	ID string
	// Type is a CID 405 code (MediaUSB, MediaCD, MediaURI, ...); nil when
	// unknown.
	Type *Code
	// Addr is the destination's network address (HOST or IP) when the
	// export went over a network; "" otherwise.
	Addr string
}

// accessParticipants are the person and/or process accessing the data
// (1..2): who asked, then Ward; Ward alone (as the requestor) when who is
// Ward or unknown (an empty AE title).
func accessParticipants(ward, who Node) []ActiveParticipant {
	if who.AETitle == "" || who == ward {
		return []ActiveParticipant{ward.participant(true, RoleApplication)}
	}
	return []ActiveParticipant{who.participant(true, nil), ward.participant(false, RoleApplication)}
}

// InstancesAccessed (A.5.3.6, 110103): instances of a patient's studies
// were created, read, updated or deleted other than by a DICOM transfer
// (an edit, a partial deletion, a rejection). action is ActionCreate,
// ActionRead, ActionUpdate or ActionDelete. who is the person or process
// that asked: a user's name or a peer's AE title in AETitle, or Ward itself
// for Ward's own jobs. reason, when not empty, is the
// EventOutcomeDescription. The standard allows one patient per message:
// callers with several patients split the studies with ByPatient and record
// one message each.
func InstancesAccessed(ward, who Node, action string, outcome int, studies []*Study, reason string, t time.Time) *Message {
	m := newMessage(ward, EventInstancesAccessed, nil, action, t, outcome)
	m.Event.Description = reason
	m.Participants = accessParticipants(ward, who)
	m.Objects = studyObjects(studies)
	return m
}

// StudyDeleted (A.5.3.8, 110105): whole studies, with all their instances,
// were deleted in one action (deleting some of a study's instances is
// InstancesAccessed with ActionDelete). who and reason are as for
// InstancesAccessed; one patient per message.
func StudyDeleted(ward, who Node, outcome int, studies []*Study, reason string, t time.Time) *Message {
	m := newMessage(ward, EventStudyDeleted, nil, ActionDelete, t, outcome)
	m.Event.Description = reason
	m.Participants = accessParticipants(ward, who)
	m.Objects = studyObjects(studies)
	return m
}

// Export (A.5.3.5, 110106): Ward wrote instances out of the archive's
// control, to media or to a non-DICOM destination (a DICOM peer receiving
// them is InstancesTransferred instead). who asked (a user or a remote
// process; Ward itself for a scheduled export); Ward is the Source, dest
// the Destination Media. Several patients may be listed.
func Export(ward, who Node, dest Media, outcome int, studies []*Study, t time.Time) *Message {
	m := newMessage(ward, EventExport, nil, ActionRead, t, outcome)
	self := who.AETitle == "" || who == ward
	if !self {
		m.Participants = append(m.Participants, who.participant(true, nil))
	}
	m.Participants = append(m.Participants, ward.participant(self, RoleSource))
	d := ActiveParticipant{UserID: dest.ID, Role: RoleDestinationMedia}
	if dest.Type != nil {
		d.Media = &MediaIdentifier{Type: dest.Type}
	}
	if dest.Addr != "" {
		d.NetworkAccessPointID, d.NetworkAccessPointTypeCode = dest.Addr, "2"
	}
	m.Participants = append(m.Participants, d)
	m.Objects = studyObjects(studies)
	return m
}

// ByPatient groups studies by patient ID (sorted by patient ID), for the
// messages that may name a single patient.
func ByPatient(studies []*Study) [][]*Study {
	groups := map[string][]*Study{}
	var pids []string
	for _, s := range studies {
		if _, ok := groups[s.PatientID]; !ok {
			pids = append(pids, s.PatientID)
		}
		groups[s.PatientID] = append(groups[s.PatientID], s)
	}
	sort.Strings(pids)
	out := make([][]*Study, 0, len(pids))
	for _, p := range pids {
		out = append(out, groups[p])
	}
	return out
}

// studyObjects lists the studies (sorted by UID) then their patients.
func studyObjects(studies []*Study) []ParticipantObject {
	studies = append([]*Study(nil), studies...)
	sort.Slice(studies, func(i, j int) bool { return studies[i].UID < studies[j].UID })
	var objs []ParticipantObject
	patients := map[string]bool{}
	var pids []string
	for _, s := range studies {
		o := ParticipantObject{ID: s.UID, TypeCode: 2, TypeRole: 3, IDType: idTypeStudyInstanceUID}
		if len(s.Classes) > 0 {
			d := &Description{}
			for uid, n := range s.Classes {
				d.SOPClasses = append(d.SOPClasses, SOPClass{UID: uid, NumberOfInstances: n})
			}
			sort.Slice(d.SOPClasses, func(i, j int) bool { return d.SOPClasses[i].UID < d.SOPClasses[j].UID })
			o.Description = d
			o.Detail = []Detail{{Type: "NumberOfInstances", Value: base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(s.Instances())))}}
		}
		if s.Deidentified != "" {
			if o.Description == nil {
				o.Description = &Description{}
			}
			o.Description.Anonymized = true
			o.Detail = append(o.Detail, Detail{Type: "DeidentificationMethod", Value: base64.StdEncoding.EncodeToString([]byte(s.Deidentified))})
			if s.DeidentifiedUID != "" {
				o.Detail = append(o.Detail, Detail{Type: "DeidentifiedStudyInstanceUID", Value: base64.StdEncoding.EncodeToString([]byte(s.DeidentifiedUID))})
			}
		}
		objs = append(objs, o)
		if s.PatientID != "" && !patients[s.PatientID] {
			patients[s.PatientID] = true
			pids = append(pids, s.PatientID)
		}
	}
	sort.Strings(pids)
	for _, p := range pids {
		objs = append(objs, ParticipantObject{ID: p, TypeCode: 1, TypeRole: 1, IDType: idTypePatientNumber})
	}
	return objs
}

// Name is the short event name used by the log's index fields and by
// `ward audit search --event`: application-activity, authentication,
// security-alert, query, begin-transferring, instances-transferred,
// instances-accessed, study-deleted, export, or the event ID's code.
func (m *Message) Name() string {
	if m.Event.ID == nil {
		return ""
	}
	switch m.Event.ID.Code {
	case "110100":
		return "application-activity"
	case "110114":
		return "authentication"
	case "110113":
		return "security-alert"
	case "110112":
		return "query"
	case "110102":
		return "begin-transferring"
	case "110104":
		return "instances-transferred"
	case "110103":
		return "instances-accessed"
	case "110105":
		return "study-deleted"
	case "110106":
		return "export"
	}
	return m.Event.ID.Code
}

// Peers are the AE titles of the participants other than the audit
// source (Ward).
func (m *Message) Peers() []string {
	var out []string
	for _, p := range m.Participants {
		// Ward's participant: its AE title is the source, or, with the
		// node, AET@NODE (source()).
		ward := p.UserID == m.Source.ID || (p.AlternativeUserID != "" && p.UserID+"@"+p.AlternativeUserID == m.Source.ID)
		if p.UserID != "" && !ward {
			out = append(out, p.UserID)
		}
	}
	return out
}

// Patients are the patient IDs among the participant objects.
func (m *Message) Patients() []string {
	var out []string
	for _, o := range m.Objects {
		if o.TypeCode == 1 && o.TypeRole == 1 {
			out = append(out, o.ID)
		}
	}
	return out
}

// Marshal encodes the message as XML.
func (m *Message) Marshal() ([]byte, error) { return xml.Marshal(m) }

// TypeSecurityConfiguration is the Security Alert type of a change to the
// security configuration (PS3.16 CID 403): here, the peers or users in
// effect.
var TypeSecurityConfiguration = dcm("110129", "Security Configuration")

// SecurityConfigChanged (A.5.3.11, 110113) with type Security
// Configuration: an operator changed who may connect or identify
// (description says what). Its outcome is success: an informative alert.
func SecurityConfigChanged(ward, operator Node, description string, t time.Time) *Message {
	m := newMessage(ward, EventSecurityAlert, TypeSecurityConfiguration, ActionExecute, t, OutcomeSuccess)
	m.Event.Description = description
	m.Participants = []ActiveParticipant{operator.participant(true, nil), ward.participant(false, RoleApplication)}
	return m
}
