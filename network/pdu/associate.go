package pdu

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// PresentationContext is a presentation context item, in a request (several
// transfer syntaxes, Result unused) or in an acceptance (one transfer syntax
// and a Result).
type PresentationContext struct {
	ID               byte
	AbstractSyntax   string // request only
	TransferSyntaxes []string
	Result           byte // acceptance only
}

// Presentation context results (PS3.8 Table 9-18).
const (
	ResultAcceptance                   byte = 0
	ResultUserRejection                byte = 1
	ResultNoReason                     byte = 2
	ResultAbstractSyntaxNotSupported   byte = 3
	ResultTransferSyntaxesNotSupported byte = 4
)

// ResultName names a presentation context result.
func ResultName(r byte) string {
	switch r {
	case ResultAcceptance:
		return "acceptance"
	case ResultUserRejection:
		return "user-rejection"
	case ResultNoReason:
		return "no-reason (provider rejection)"
	case ResultAbstractSyntaxNotSupported:
		return "abstract-syntax-not-supported (provider rejection)"
	case ResultTransferSyntaxesNotSupported:
		return "transfer-syntaxes-not-supported (provider rejection)"
	}
	return fmt.Sprintf("result %d", r)
}

// RoleSelection is an SCP/SCU role selection sub-item (PS3.7 D.3.3.4).
type RoleSelection struct {
	SOPClassUID string
	SCU, SCP    bool
}

// ExtendedNegotiation is an SOP class extended negotiation sub-item.
type ExtendedNegotiation struct {
	SOPClassUID string
	Info        []byte
}

// CommonExtendedNegotiation is an SOP class common extended negotiation
// sub-item (PS3.7 D.3.3.6).
type CommonExtendedNegotiation struct {
	SOPClassUID              string
	ServiceClassUID          string
	RelatedGeneralSOPClasses []string
}

// User identity types (PS3.7 D.3.3.7).
const (
	IdentityUsername         byte = 1
	IdentityUsernamePasscode byte = 2
	IdentityKerberos         byte = 3
	IdentitySAML             byte = 4
	IdentityJWT              byte = 5
)

// UserIdentity is a user identity negotiation request sub-item.
type UserIdentity struct {
	Type             byte
	PositiveResponse bool
	Primary          []byte
	Secondary        []byte
}

// UserInfo is the user information item and its sub-items.
type UserInfo struct {
	MaxLength                 uint32 // 0: unlimited
	ImplementationClassUID    string
	ImplementationVersionName string
	// AsyncWindow is nil when the sub-item is absent.
	AsyncWindow    *AsyncWindow
	Roles          []RoleSelection
	Extended       []ExtendedNegotiation
	CommonExtended []CommonExtendedNegotiation
	// UserIdentity is set in a request; UserIdentityResponse in an acceptance.
	UserIdentity         *UserIdentity
	UserIdentityResponse []byte
	HasIdentityResponse  bool
}

// AsyncWindow is the asynchronous operations window sub-item.
type AsyncWindow struct {
	Invoked, Performed uint16
}

// AssociateRQ is an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2).
type AssociateRQ struct {
	ProtocolVersion    uint16
	CalledAETitle      string
	CallingAETitle     string
	ApplicationContext string
	Contexts           []PresentationContext
	UserInfo           UserInfo
}

// AssociateAC is an A-ASSOCIATE-AC PDU (PS3.8 9.3.3). The AE title fields are
// echoed from the request and not to be tested.
type AssociateAC struct {
	ProtocolVersion    uint16
	CalledAETitle      string
	CallingAETitle     string
	ApplicationContext string
	Contexts           []PresentationContext
	UserInfo           UserInfo
}

func (*AssociateRQ) Type() byte { return TypeAssociateRQ }
func (*AssociateAC) Type() byte { return TypeAssociateAC }

func (p *AssociateRQ) AppendTo(b []byte) []byte {
	return appendAssociate(b, TypeAssociateRQ, p.CalledAETitle, p.CallingAETitle, p.ApplicationContext, p.Contexts, &p.UserInfo)
}

func (p *AssociateAC) AppendTo(b []byte) []byte {
	return appendAssociate(b, TypeAssociateAC, p.CalledAETitle, p.CallingAETitle, p.ApplicationContext, p.Contexts, &p.UserInfo)
}

func appendAE(b []byte, ae string) []byte {
	var f [16]byte
	for i := range f {
		f[i] = ' '
	}
	copy(f[:], ae)
	return append(b, f[:]...)
}

func appendItem(b []byte, t byte, v []byte) []byte {
	return append(append(b, t, 0, byte(len(v)>>8), byte(len(v))), v...)
}

// appendItemFunc appends an item whose body is produced by f.
func appendItemFunc(b []byte, t byte, f func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, t, 0, 0, 0)
	b = f(b)
	n := len(b) - start - 4
	binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	return b
}

func appendU16String(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

func appendAssociate(b []byte, t byte, called, calling, appCtx string, pcs []PresentationContext, ui *UserInfo) []byte {
	start := len(b)
	b = appendHeader(b, t, 0)
	b = append(b, 0, 1, 0, 0)
	b = appendAE(b, called)
	b = appendAE(b, calling)
	b = append(b, make([]byte, 32)...)
	if appCtx == "" {
		appCtx = ApplicationContextName
	}
	b = appendItem(b, ItemApplicationContext, []byte(appCtx))
	for _, pc := range pcs {
		if t == TypeAssociateRQ {
			b = appendItemFunc(b, ItemPresentationContextRQ, func(b []byte) []byte {
				b = append(b, pc.ID, 0, 0, 0)
				b = appendItem(b, ItemAbstractSyntax, []byte(pc.AbstractSyntax))
				for _, ts := range pc.TransferSyntaxes {
					b = appendItem(b, ItemTransferSyntax, []byte(ts))
				}
				return b
			})
		} else {
			b = appendItemFunc(b, ItemPresentationContextAC, func(b []byte) []byte {
				b = append(b, pc.ID, 0, pc.Result, 0)
				ts := ""
				if len(pc.TransferSyntaxes) > 0 {
					ts = pc.TransferSyntaxes[0]
				}
				return appendItem(b, ItemTransferSyntax, []byte(ts))
			})
		}
	}
	b = appendItemFunc(b, ItemUserInformation, func(b []byte) []byte {
		var ml [4]byte
		binary.BigEndian.PutUint32(ml[:], ui.MaxLength)
		b = appendItem(b, ItemMaximumLength, ml[:])
		b = appendItem(b, ItemImplementationClassUID, []byte(ui.ImplementationClassUID))
		if ui.AsyncWindow != nil {
			b = appendItem(b, ItemAsyncOperationsWindow, []byte{byte(ui.AsyncWindow.Invoked >> 8), byte(ui.AsyncWindow.Invoked), byte(ui.AsyncWindow.Performed >> 8), byte(ui.AsyncWindow.Performed)})
		}
		for _, r := range ui.Roles {
			b = appendItemFunc(b, ItemRoleSelection, func(b []byte) []byte {
				return append(appendU16String(b, r.SOPClassUID), boolByte(r.SCU), boolByte(r.SCP))
			})
		}
		if ui.ImplementationVersionName != "" {
			b = appendItem(b, ItemImplementationVersion, []byte(ui.ImplementationVersionName))
		}
		for _, e := range ui.Extended {
			b = appendItemFunc(b, ItemSOPClassExtended, func(b []byte) []byte {
				return append(appendU16String(b, e.SOPClassUID), e.Info...)
			})
		}
		for _, e := range ui.CommonExtended {
			b = appendItemFunc(b, ItemSOPClassCommonExtended, func(b []byte) []byte {
				b = appendU16String(b, e.SOPClassUID)
				b = appendU16String(b, e.ServiceClassUID)
				n := 0
				for _, r := range e.RelatedGeneralSOPClasses {
					n += 2 + len(r)
				}
				b = append(b, byte(n>>8), byte(n))
				for _, r := range e.RelatedGeneralSOPClasses {
					b = appendU16String(b, r)
				}
				return b
			})
		}
		if id := ui.UserIdentity; id != nil && t == TypeAssociateRQ {
			b = appendItemFunc(b, ItemUserIdentityRQ, func(b []byte) []byte {
				b = append(b, id.Type, boolByte(id.PositiveResponse))
				b = append(append(b, byte(len(id.Primary)>>8), byte(len(id.Primary))), id.Primary...)
				return append(append(b, byte(len(id.Secondary)>>8), byte(len(id.Secondary))), id.Secondary...)
			})
		}
		if ui.HasIdentityResponse && t == TypeAssociateAC {
			b = appendItemFunc(b, ItemUserIdentityAC, func(b []byte) []byte {
				return append(append(b, byte(len(ui.UserIdentityResponse)>>8), byte(len(ui.UserIdentityResponse))), ui.UserIdentityResponse...)
			})
		}
		return b
	})
	binary.BigEndian.PutUint32(b[start+2:], uint32(len(b)-start-HeaderLen))
	return b
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// item is a decoded item header and body.
type item struct {
	typ  byte
	body []byte
}

// splitItems splits b into items, checking every length against what is left.
func splitItems(b []byte, where string) ([]item, error) {
	var items []item
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: truncated item header in %s", ErrMalformed, where)
		}
		l := int(binary.BigEndian.Uint16(b[2:]))
		if l > len(b)-4 {
			return nil, fmt.Errorf("%w: item 0x%02x in %s declares %d bytes, %d left", ErrMalformed, b[0], where, l, len(b)-4)
		}
		items = append(items, item{typ: b[0], body: b[4 : 4+l]})
		b = b[4+l:]
	}
	return items, nil
}

func trimAE(b []byte) string {
	return strings.TrimSpace(string(b))
}

// trimUID removes the trailing NUL padding some implementations add.
func trimUID(b []byte) string {
	return strings.TrimRight(string(b), "\x00 ")
}

type associateFields struct {
	version         uint16
	called, calling string
	appCtx          string
	pcs             []PresentationContext
	ui              UserInfo
}

func decodeAssociate(body []byte, rq bool) (*associateFields, error) {
	if len(body) < 68 {
		return nil, fmt.Errorf("%w: associate pdu of %d bytes", ErrMalformed, len(body))
	}
	f := &associateFields{
		version: binary.BigEndian.Uint16(body),
		called:  trimAE(body[4:20]),
		calling: trimAE(body[20:36]),
	}
	items, err := splitItems(body[68:], "associate pdu")
	if err != nil {
		return nil, err
	}
	var sawAppCtx, sawUserInfo bool
	for _, it := range items {
		switch it.typ {
		case ItemApplicationContext:
			if sawAppCtx {
				return nil, fmt.Errorf("%w: two application context items", ErrMalformed)
			}
			f.appCtx = trimUID(it.body)
			sawAppCtx = true
		case ItemPresentationContextRQ, ItemPresentationContextAC:
			if (it.typ == ItemPresentationContextRQ) != rq {
				return nil, fmt.Errorf("%w: presentation context item 0x%02x in the wrong pdu", ErrMalformed, it.typ)
			}
			pc, err := decodePresentationContext(it, rq)
			if err != nil {
				return nil, err
			}
			f.pcs = append(f.pcs, pc)
		case ItemUserInformation:
			if sawUserInfo {
				return nil, fmt.Errorf("%w: two user information items", ErrMalformed)
			}
			if err := decodeUserInfo(it.body, &f.ui); err != nil {
				return nil, err
			}
			sawUserInfo = true
		default:
			return nil, fmt.Errorf("%w: unknown item type 0x%02x in associate pdu", ErrMalformed, it.typ)
		}
	}
	if !sawAppCtx {
		return nil, fmt.Errorf("%w: no application context item", ErrMalformed)
	}
	if !sawUserInfo {
		return nil, fmt.Errorf("%w: no user information item", ErrMalformed)
	}
	if len(f.pcs) == 0 && rq {
		return nil, fmt.Errorf("%w: no presentation context item", ErrMalformed)
	}
	return f, nil
}

func decodePresentationContext(it item, rq bool) (PresentationContext, error) {
	var pc PresentationContext
	if len(it.body) < 4 {
		return pc, fmt.Errorf("%w: presentation context item of %d bytes", ErrMalformed, len(it.body))
	}
	pc.ID = it.body[0]
	pc.Result = it.body[2]
	if pc.ID%2 == 0 {
		return pc, fmt.Errorf("%w: presentation context id %d is not odd", ErrMalformed, pc.ID)
	}
	subs, err := splitItems(it.body[4:], "presentation context")
	if err != nil {
		return pc, err
	}
	for _, s := range subs {
		switch {
		case s.typ == ItemAbstractSyntax && rq:
			if pc.AbstractSyntax != "" {
				return pc, fmt.Errorf("%w: presentation context %d has two abstract syntaxes", ErrMalformed, pc.ID)
			}
			pc.AbstractSyntax = trimUID(s.body)
		case s.typ == ItemTransferSyntax:
			pc.TransferSyntaxes = append(pc.TransferSyntaxes, trimUID(s.body))
		default:
			return pc, fmt.Errorf("%w: item 0x%02x in presentation context %d", ErrMalformed, s.typ, pc.ID)
		}
	}
	if rq && (pc.AbstractSyntax == "" || len(pc.TransferSyntaxes) == 0) {
		return pc, fmt.Errorf("%w: presentation context %d lacks an abstract or transfer syntax", ErrMalformed, pc.ID)
	}
	return pc, nil
}

func readU16String(b []byte, where string) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("%w: truncated %s", ErrMalformed, where)
	}
	l := int(binary.BigEndian.Uint16(b))
	if l > len(b)-2 {
		return "", nil, fmt.Errorf("%w: %s length %d, %d bytes left", ErrMalformed, where, l, len(b)-2)
	}
	return trimUID(b[2 : 2+l]), b[2+l:], nil
}

func readU16Bytes(b []byte, where string) ([]byte, []byte, error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("%w: truncated %s", ErrMalformed, where)
	}
	l := int(binary.BigEndian.Uint16(b))
	if l > len(b)-2 {
		return nil, nil, fmt.Errorf("%w: %s length %d, %d bytes left", ErrMalformed, where, l, len(b)-2)
	}
	return append([]byte(nil), b[2:2+l]...), b[2+l:], nil
}

func decodeUserInfo(b []byte, ui *UserInfo) error {
	subs, err := splitItems(b, "user information")
	if err != nil {
		return err
	}
	// Sub-items that carry one value for the association: a second one
	// would leave it to the reader which holds (PS3.7 D.3.3, PS3.8 D.1).
	once := map[byte]bool{}
	for _, s := range subs {
		switch s.typ {
		case ItemMaximumLength, ItemImplementationClassUID, ItemImplementationVersion, ItemAsyncOperationsWindow, ItemUserIdentityRQ, ItemUserIdentityAC:
			if once[s.typ] {
				return fmt.Errorf("%w: two user information sub-items of type 0x%02x", ErrMalformed, s.typ)
			}
			once[s.typ] = true
		}
		switch s.typ {
		case ItemMaximumLength:
			if len(s.body) != 4 {
				return fmt.Errorf("%w: maximum length sub-item of %d bytes", ErrMalformed, len(s.body))
			}
			ui.MaxLength = binary.BigEndian.Uint32(s.body)
		case ItemImplementationClassUID:
			ui.ImplementationClassUID = trimUID(s.body)
		case ItemImplementationVersion:
			ui.ImplementationVersionName = strings.TrimSpace(string(s.body))
		case ItemAsyncOperationsWindow:
			if len(s.body) != 4 {
				return fmt.Errorf("%w: asynchronous operations window of %d bytes", ErrMalformed, len(s.body))
			}
			ui.AsyncWindow = &AsyncWindow{Invoked: binary.BigEndian.Uint16(s.body), Performed: binary.BigEndian.Uint16(s.body[2:])}
		case ItemRoleSelection:
			uid, rest, err := readU16String(s.body, "role selection uid")
			if err != nil {
				return err
			}
			if len(rest) != 2 {
				return fmt.Errorf("%w: role selection sub-item for %s", ErrMalformed, uid)
			}
			ui.Roles = append(ui.Roles, RoleSelection{SOPClassUID: uid, SCU: rest[0] == 1, SCP: rest[1] == 1})
		case ItemSOPClassExtended:
			uid, rest, err := readU16String(s.body, "extended negotiation uid")
			if err != nil {
				return err
			}
			ui.Extended = append(ui.Extended, ExtendedNegotiation{SOPClassUID: uid, Info: append([]byte(nil), rest...)})
		case ItemSOPClassCommonExtended:
			var e CommonExtendedNegotiation
			rest := s.body
			if e.SOPClassUID, rest, err = readU16String(rest, "common extended negotiation sop class"); err != nil {
				return err
			}
			if e.ServiceClassUID, rest, err = readU16String(rest, "common extended negotiation service class"); err != nil {
				return err
			}
			var related []byte
			if related, rest, err = readU16Bytes(rest, "related general sop classes"); err != nil {
				return err
			}
			if len(rest) != 0 {
				return fmt.Errorf("%w: %d stray bytes in common extended negotiation", ErrMalformed, len(rest))
			}
			for len(related) > 0 {
				var uid string
				if uid, related, err = readU16String(related, "related general sop class"); err != nil {
					return err
				}
				e.RelatedGeneralSOPClasses = append(e.RelatedGeneralSOPClasses, uid)
			}
			ui.CommonExtended = append(ui.CommonExtended, e)
		case ItemUserIdentityRQ:
			if len(s.body) < 2 {
				return fmt.Errorf("%w: user identity sub-item of %d bytes", ErrMalformed, len(s.body))
			}
			id := &UserIdentity{Type: s.body[0], PositiveResponse: s.body[1] == 1}
			rest := s.body[2:]
			if id.Primary, rest, err = readU16Bytes(rest, "user identity primary field"); err != nil {
				return err
			}
			if id.Secondary, rest, err = readU16Bytes(rest, "user identity secondary field"); err != nil {
				return err
			}
			if len(rest) != 0 {
				return fmt.Errorf("%w: %d stray bytes in user identity", ErrMalformed, len(rest))
			}
			ui.UserIdentity = id
		case ItemUserIdentityAC:
			resp, rest, err := readU16Bytes(s.body, "user identity response")
			if err != nil {
				return err
			}
			if len(rest) != 0 {
				return fmt.Errorf("%w: %d stray bytes in user identity response", ErrMalformed, len(rest))
			}
			ui.UserIdentityResponse, ui.HasIdentityResponse = resp, true
		default:
			// PS3.7 D.3.3: unknown user information sub-items are ignored.
		}
	}
	return nil
}

func decodeAssociateRQ(body []byte) (*AssociateRQ, error) {
	f, err := decodeAssociate(body, true)
	if err != nil {
		return nil, err
	}
	return &AssociateRQ{ProtocolVersion: f.version, CalledAETitle: f.called, CallingAETitle: f.calling, ApplicationContext: f.appCtx, Contexts: f.pcs, UserInfo: f.ui}, nil
}

func decodeAssociateAC(body []byte) (*AssociateAC, error) {
	f, err := decodeAssociate(body, false)
	if err != nil {
		return nil, err
	}
	return &AssociateAC{ProtocolVersion: f.version, CalledAETitle: f.called, CallingAETitle: f.calling, ApplicationContext: f.appCtx, Contexts: f.pcs, UserInfo: f.ui}, nil
}
