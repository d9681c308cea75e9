package scan

import (
	"fmt"
	"strings"
)

// Severity ranks a finding.
type Severity int

// The severities, lowest first.
const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = [...]string{"info", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < Info || s > Critical {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// MarshalText writes the severity's name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity name.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSeverity parses critical, high, medium, low or info.
func ParseSeverity(name string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(strings.TrimSpace(name), n) {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("scan: severity %q: use critical, high, medium, low or info", name)
}

// Finding IDs. They are stable: reports, SARIF rules and --fail-on
// consumers key on them.
const (
	IDService               = "dicom.service"
	IDAnyAEAccepted         = "dicom.any-ae-accepted"
	IDCalledAEDiscovered    = "dicom.called-ae-discovered"
	IDNoTLS                 = "dicom.no-tls"
	IDUserIdentityNotForced = "dicom.user-identity-not-enforced"
	IDCFindOpen             = "dicom.cfind-open"
	IDCGetOffered           = "dicom.cget-offered"
	IDCMoveOffered          = "dicom.cmove-offered"
	IDCStoreOpen            = "dicom.cstore-open"
	IDKnownVulnerable       = "dicom.known-vulnerable"
	IDOrthancRESTOpen       = "http.orthanc-rest-open"
	IDDICOMwebOpen          = "http.dicomweb-open"
	IDHTTPNoTLS             = "http.no-tls"
)

// Rule describes one finding ID: its default severity, a one-line title
// and how to fix it.
type Rule struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Fix      string   `json:"fix"`
}

// Rules is the catalogue of findings, in report order.
var Rules = []Rule{
	{IDService, Info, "A DICOM upper-layer service answers on this port.",
		"Make sure this service is meant to be reachable from where the scan ran; restrict it with a firewall to the modalities and workstations that use it."},
	{IDAnyAEAccepted, High, "An association with random calling and called AE titles was accepted.",
		"Check the called AE title and accept only registered calling AE titles, bound to their host addresses or TLS client certificates."},
	{IDCalledAEDiscovered, Medium, "The called AE title was guessed from a short list of common titles.",
		"Use a non-default AE title and, more importantly, refuse unregistered calling AE titles and peers that are not on the expected hosts."},
	{IDNoTLS, Medium, "A plaintext DICOM association was accepted (no TLS).",
		"Offer DICOM over TLS (PS3.15 B.12, TLS 1.2 or later) and refuse plaintext associations from outside a trusted network."},
	{IDUserIdentityNotForced, Medium, "An association with a bogus username and passcode, positive response requested, was accepted.",
		"Require and verify user identity negotiation (PS3.7 D.3.3.7) for peers outside a trusted network, or restrict the peers by address and certificate."},
	{IDCFindOpen, Critical, "STUDY-level C-FIND was answered for an unregistered AE title.",
		"Allow query only to registered peers; limit the number of C-FIND responses; never answer universal queries to unknown AE titles."},
	{IDCGetOffered, High, "The Study Root C-GET presentation context was accepted for an unregistered AE title.",
		"Refuse C-GET contexts to peers that may not retrieve; grant retrieval per registered peer."},
	{IDCMoveOffered, High, "The Study Root C-MOVE presentation context was accepted for an unregistered AE title.",
		"Refuse C-MOVE contexts to peers that may not retrieve, and move only to registered destinations at their registered addresses (status A801 for unknown ones)."},
	{IDCStoreOpen, High, "A storage presentation context was accepted for an unregistered AE title (nothing was sent).",
		"Accept C-STORE only from registered modalities; an open store lets anyone plant or overwrite studies."},
	{IDKnownVulnerable, High, "The implementation version matches a release with known vulnerabilities.",
		"Upgrade to a fixed release (see the CVEs in the evidence)."},
	{IDOrthancRESTOpen, Critical, "The Orthanc REST API answered without credentials.",
		"Set AuthenticationEnabled to true with RegisteredUsers holding strong passwords, keep RemoteAccessAllowed false unless needed, and put the API behind TLS."},
	{IDDICOMwebOpen, Critical, "A DICOMweb QIDO-RS query was answered without credentials.",
		"Require authentication (OAuth 2 / OIDC bearer tokens or at least basic authentication over TLS) for every DICOMweb endpoint."},
	{IDHTTPNoTLS, Medium, "An HTTP service answers in clear text.",
		"Serve the web interface and DICOMweb over HTTPS only (TLS 1.2 or later) and redirect or close plain HTTP."},
}

// RuleFor returns the rule of a finding ID.
func RuleFor(id string) (Rule, bool) {
	for _, r := range Rules {
		if r.ID == id {
			return r, true
		}
	}
	return Rule{}, false
}

// Evidence is what was sent and what came back. It never holds patient
// data: identifiers returned by a peer are counted, never kept.
type Evidence struct {
	// Sent describes the request (PDUs, DIMSE commands, HTTP requests).
	Sent string `json:"sent"`
	// Received describes the answer.
	Received string `json:"received"`
	// Count is a number of responses (C-FIND matches, REST entries), when
	// the check counts.
	Count *int64 `json:"count,omitempty"`
	// CapReached tells that counting stopped at the cap (the real number
	// is larger).
	CapReached bool `json:"cap_reached,omitempty"`
	// Status is a DIMSE status (hex) or an HTTP status code, when any.
	Status string `json:"status,omitempty"`
}

// Finding is one thing the scan proved about one service.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	Title    string   `json:"title"`
	Evidence Evidence `json:"evidence"`
	Fix      string   `json:"fix"`
	// CVEs lists CVE ids (dicom.known-vulnerable).
	CVEs []string `json:"cves,omitempty"`
}

// newFinding fills severity, title and fix from the rule.
func newFinding(id string, ep Endpoint, ev Evidence) Finding {
	r, ok := RuleFor(id)
	if !ok {
		panic("scan: unknown finding id " + id)
	}
	return Finding{ID: id, Severity: r.Severity, Host: ep.Addr.String(), Port: ep.Port, Title: r.Title, Evidence: ev, Fix: r.Fix}
}

func count(n int64) *int64 { return &n }
