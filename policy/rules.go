package policy

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Permission is what a principal may do: a service it may use, or (for
// MoveDestination) one it may receive. The archive names its permissions
// by the same strings (archive.PermEcho...).
type Permission string

// The permissions.
const (
	Echo  Permission = "echo"
	Store Permission = "store"
	Find  Permission = "find"
	Move  Permission = "move"
	Get   Permission = "get"
	// BulkQuery lets a peer's queries list the whole archive
	// (archive.JudgeQuery says which queries need it).
	BulkQuery Permission = "bulk-query"
	// MoveDestination lets C-MOVE send the peer images (at its host and
	// port); it is not a service the peer uses.
	MoveDestination Permission = "move-destination"
)

// Permissions lists every permission, in the order grants list them.
var Permissions = []Permission{Echo, Store, Find, Move, Get, BulkQuery, MoveDestination}

// Rules is the admission and permission policy, as the configuration
// states it (internal/config translates [[peers]], [dicom] and [query]).
type Rules struct {
	// Peers are the registered peers.
	Peers []Peer
	// LoopbackAnyAE admits any calling AE title on a plain loopback
	// listener from loopback, with every permission (a named opt-in).
	LoopbackAnyAE bool
	// PlaintextNetworks are the source networks acknowledged for plain
	// (non-TLS) DIMSE beyond loopback.
	PlaintextNetworks []netip.Prefix
	// MaxAssociationsPerPeer bounds each peer's concurrent associations
	// unless the peer says otherwise.
	MaxAssociationsPerPeer int
	// MaxResults caps each peer's queries unless the peer says otherwise
	// (0: the archive's default; negative: no cap).
	MaxResults int
	// Lockout is how refusals lock a source or an account out. A Limiter
	// outlives reloads: it takes the rule in effect at start
	// (NewLimiter).
	Lockout LockoutRule
	// Roles are the roles of each user that has some ([[users]] roles);
	// a user not here is a DIMSE identity only.
	Roles map[string][]Role
}

// LockoutRule: After consecutive refusals from one source address (failed
// passcodes of one account) lock it out for Base, doubling with each
// further refusal up to Max. After ≤ 0: never.
type LockoutRule struct {
	After     int
	Base, Max time.Duration
}

// NewLimiter is a Limiter applying l.
func NewLimiter(l LockoutRule) *Limiter {
	return &Limiter{After: l.After, Base: l.Base, Max: l.Max}
}

// Peer is a registered peer and what binds it: its AE title, the source
// it may call from, its certificate, and what it may do.
type Peer struct {
	AETitle string
	// Host is where Ward reaches the peer. Without Networks and
	// CertFingerprint, the peer is bound to its addresses.
	Host string
	// Networks are the source networks the peer may call from.
	Networks []netip.Prefix
	// CertFingerprint pins the peer's TLS client certificate: the SHA-256
	// of its DER encoding, hex (ParseFingerprint's forms). A pinned peer
	// may call only over TLS.
	CertFingerprint string
	// RequireTLS refuses the peer on the plain listener.
	RequireTLS bool
	// RequireIdentity refuses an association without a verified user
	// identity.
	RequireIdentity bool
	// Allow lists the peer's permissions.
	Allow []Permission
	// MaxAssociations overrides Rules.MaxAssociationsPerPeer when > 0.
	MaxAssociations int
	// MaxResults overrides Rules.MaxResults when not 0.
	MaxResults int
	// Deidentify is the de-identification profile applied to what the
	// peer retrieves ("" none).
	Deidentify string
}

// ParseFingerprint parses a SHA-256 certificate fingerprint written as 64
// hex digits, with or without colons, and returns it as lower-case hex
// without colons (the form Fingerprint gives).
func ParseFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(h) != 64 {
		return "", fmt.Errorf("certificate fingerprint %q: want the SHA-256 of the certificate, 64 hex digits", s)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("certificate fingerprint %q: not hex", s)
	}
	return h, nil
}

// CredentialType is the kind of a user's credential. The values are those
// of PS3.7 D.3.3.7's User-Identity-Type, so the DIMSE front end carries
// the type across unchanged; another front end names its own.
type CredentialType byte

// The credential types.
const (
	Username         CredentialType = 1 // a user name alone (refused)
	UsernamePasscode CredentialType = 2 // a user name and a passcode
	Kerberos         CredentialType = 3 // a Kerberos service ticket (refused)
	SAML             CredentialType = 4 // a SAML assertion (refused)
	JWT              CredentialType = 5 // a JSON Web Token
)

// Credential is what a caller presents to say who its user is, whatever
// the front end: the DIMSE one fills it from the user identity sub-item.
type Credential struct {
	Type CredentialType
	// Primary is the user name, or the token or ticket.
	Primary []byte
	// Secondary is the passcode (UsernamePasscode only).
	Secondary []byte
	// PositiveResponse: the caller asks for the server's response to its
	// credential.
	PositiveResponse bool
}

// Request is an association (or session) request as policy sees it.
type Request struct {
	// CallingAETitle names the calling peer (spaces around it are
	// ignored).
	CallingAETitle string
	// Credential is the user's credential; nil without one.
	Credential *Credential
}

// RefusalKind is the class of a refusal.
type RefusalKind int

// The refusal kinds. The DIMSE front end answers each with an
// A-ASSOCIATE-RJ (PS3.8 9.3.4): RefusedNoReason and RefusedCaller
// rejected-permanent by the service user (reasons 1 and 3), RefusedBusy
// rejected-transient by the presentation layer (local limit exceeded),
// RefusedInvalid rejected-permanent by the ACSE (no reason given).
const (
	// RefusedNoReason: refused for a reason the caller is not told (bad
	// credentials, plain DIMSE from outside the acknowledged networks).
	RefusedNoReason RefusalKind = iota + 1
	// RefusedCaller: the calling AE title is not recognised (unknown, or
	// calling from the wrong source, certificate or listener).
	RefusedCaller
	// RefusedBusy: no verdict on the caller, a limit or lockout holds.
	RefusedBusy
	// RefusedInvalid: the request breaks the protocol.
	RefusedInvalid
)

// Role is what a user account may do beyond DIMSE identity, for the front
// ends that authenticate users rather than peers (the web front end).
// A user without a role is an identity for DIMSE only: the peer's
// permissions decide there, and the role grants nothing.
type Role string

// The roles.
const (
	// Viewer may query (and list) and retrieve.
	Viewer Role = "viewer"
	// Uploader may also store.
	Uploader Role = "uploader"
	// Admin may do everything.
	Admin Role = "admin"
)

// Roles lists every role, least first.
var Roles = []Role{Viewer, Uploader, Admin}

// ParseRole parses a role's name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("role %q: give viewer, uploader or admin", s)
}

// readPerms are what reading grants: query and retrieve, listing
// included (a viewer's study list is a universal query; the per-user cap
// bounds it, and the audit trail records it).
var readPerms = []Permission{Echo, Find, Move, Get, BulkQuery}

// RolePermissions is what role r grants (nil for an unknown role). Admin
// holds every permission and, beyond them, the administration that only
// Admin is asked for (IsAdmin).
func RolePermissions(r Role) []Permission {
	switch r {
	case Viewer:
		return append([]Permission(nil), readPerms...)
	case Uploader:
		return append(append([]Permission(nil), readPerms...), Store)
	case Admin:
		return append([]Permission(nil), Permissions...)
	}
	return nil
}

// ReadPermission reports whether p only reads (query and retrieve), so
// that a read-scoped token may use it.
func ReadPermission(p Permission) bool {
	for _, q := range readPerms {
		if p == q {
			return true
		}
	}
	return false
}
