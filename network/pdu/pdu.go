// Package pdu encodes and decodes the protocol data units of the DICOM upper
// layer (PS3.8 section 9.3) and their items. It knows nothing of sockets or
// association state.
//
// Every decoder is bounded: Read checks the declared PDU length against the
// caller's limit before it allocates, and every item length against the bytes
// that remain in its PDU.
package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// PDU types (PS3.8 9.3.1).
const (
	TypeAssociateRQ byte = 0x01
	TypeAssociateAC byte = 0x02
	TypeAssociateRJ byte = 0x03
	TypePDataTF     byte = 0x04
	TypeReleaseRQ   byte = 0x05
	TypeReleaseRP   byte = 0x06
	TypeAbort       byte = 0x07
)

// Item types (PS3.8 9.3.2, 9.3.3 and Annex D).
const (
	ItemApplicationContext     byte = 0x10
	ItemPresentationContextRQ  byte = 0x20
	ItemPresentationContextAC  byte = 0x21
	ItemAbstractSyntax         byte = 0x30
	ItemTransferSyntax         byte = 0x40
	ItemUserInformation        byte = 0x50
	ItemMaximumLength          byte = 0x51
	ItemImplementationClassUID byte = 0x52
	ItemAsyncOperationsWindow  byte = 0x53
	ItemRoleSelection          byte = 0x54
	ItemImplementationVersion  byte = 0x55
	ItemSOPClassExtended       byte = 0x56
	ItemSOPClassCommonExtended byte = 0x57
	ItemUserIdentityRQ         byte = 0x58
	ItemUserIdentityAC         byte = 0x59
)

// ApplicationContextName is the only DICOM application context (PS3.7 A.2.1).
const ApplicationContextName = "1.2.840.10008.3.1.1.1"

// HeaderLen is the size of a PDU header: type, reserved, 32-bit length.
const HeaderLen = 6

// Sentinel errors. A decoding error always wraps one of them.
var (
	ErrUnknownType = errors.New("pdu: unknown pdu type")
	ErrTooLong     = errors.New("pdu: declared length exceeds limit")
	ErrMalformed   = errors.New("pdu: malformed")
)

// PDU is one decoded protocol data unit.
type PDU interface {
	Type() byte
	// AppendTo appends the PDU's complete encoding (header included) to b.
	AppendTo(b []byte) []byte
}

// Header is a decoded PDU header.
type Header struct {
	Type   byte
	Length uint32
}

// ReadHeader reads a PDU header and checks the type and the declared length
// against limit before anything else is read.
func ReadHeader(r io.Reader, limit uint32) (Header, error) {
	var h [HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Header{}, err
	}
	hd := Header{Type: h[0], Length: binary.BigEndian.Uint32(h[2:])}
	if hd.Type < TypeAssociateRQ || hd.Type > TypeAbort {
		return hd, fmt.Errorf("%w 0x%02x", ErrUnknownType, hd.Type)
	}
	if hd.Length > limit {
		return hd, fmt.Errorf("%w: %d > %d bytes", ErrTooLong, hd.Length, limit)
	}
	if min := minLength(hd.Type); hd.Length < min {
		return hd, fmt.Errorf("%w: pdu type 0x%02x length %d below minimum %d", ErrMalformed, hd.Type, hd.Length, min)
	}
	return hd, nil
}

func minLength(t byte) uint32 {
	switch t {
	case TypeAssociateRQ, TypeAssociateAC:
		return 68
	case TypeAssociateRJ, TypeReleaseRQ, TypeReleaseRP, TypeAbort:
		return 4
	}
	return 0
}

// Read reads one PDU. limit bounds the declared length: callers pass the
// negotiated maximum for P-DATA-TF and a fixed bound for the others. buf is
// reused for the body when it is large enough; a returned PDataTF aliases it.
func Read(r io.Reader, limit uint32, buf []byte) (PDU, []byte, error) {
	h, err := ReadHeader(r, limit)
	if err != nil {
		return nil, buf, err
	}
	if uint32(cap(buf)) < h.Length {
		buf = make([]byte, h.Length)
	}
	body := buf[:h.Length]
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, buf, fmt.Errorf("pdu: reading %d-byte body: %w", h.Length, err)
	}
	p, err := Decode(h.Type, body)
	return p, buf, err
}

// Decode decodes the body of a PDU of type t.
func Decode(t byte, body []byte) (PDU, error) {
	switch t {
	case TypeAssociateRQ:
		return decodeAssociateRQ(body)
	case TypeAssociateAC:
		return decodeAssociateAC(body)
	case TypeAssociateRJ:
		return &AssociateRJ{Result: body[1], Source: body[2], Reason: body[3]}, nil
	case TypePDataTF:
		return decodePDataTF(body)
	case TypeReleaseRQ:
		return &ReleaseRQ{}, nil
	case TypeReleaseRP:
		return &ReleaseRP{}, nil
	case TypeAbort:
		return &Abort{Source: body[2], Reason: body[3]}, nil
	}
	return nil, fmt.Errorf("%w 0x%02x", ErrUnknownType, t)
}

func appendHeader(b []byte, t byte, length int) []byte {
	return append(b, t, 0, byte(length>>24), byte(length>>16), byte(length>>8), byte(length))
}

// AssociateRJ is an A-ASSOCIATE-RJ PDU (PS3.8 9.3.4).
type AssociateRJ struct {
	Result byte // 1 rejected-permanent, 2 rejected-transient
	Source byte // 1 service-user, 2 service-provider (ACSE), 3 service-provider (presentation)
	Reason byte
}

// Reject results, sources and reasons (PS3.8 Table 9-21).
const (
	RejectPermanent byte = 1
	RejectTransient byte = 2

	RejectSourceUser         byte = 1
	RejectSourceACSE         byte = 2
	RejectSourcePresentation byte = 3

	// source 1 (service-user)
	RejectNoReason               byte = 1
	RejectAppContextUnsupported  byte = 2
	RejectCallingAENotRecognized byte = 3
	RejectCalledAENotRecognized  byte = 7
	// source 2 (ACSE)
	RejectACSENoReason               byte = 1
	RejectProtocolVersionUnsupported byte = 2
	// source 3 (presentation)
	RejectTemporaryCongestion byte = 1
	RejectLocalLimitExceeded  byte = 2
)

func (*AssociateRJ) Type() byte { return TypeAssociateRJ }
func (p *AssociateRJ) AppendTo(b []byte) []byte {
	b = appendHeader(b, TypeAssociateRJ, 4)
	return append(b, 0, p.Result, p.Source, p.Reason)
}

// String describes the rejection as PS3.8 names it.
func (p *AssociateRJ) String() string {
	return fmt.Sprintf("result %d (%s), source %d, reason %d (%s)", p.Result, rejectResultName(p.Result), p.Source, p.Reason, RejectReasonName(p.Source, p.Reason))
}

func rejectResultName(r byte) string {
	switch r {
	case RejectPermanent:
		return "rejected-permanent"
	case RejectTransient:
		return "rejected-transient"
	}
	return "unknown"
}

// RejectReasonName names a reject reason for a given source.
func RejectReasonName(source, reason byte) string {
	switch source {
	case RejectSourceUser:
		switch reason {
		case 1:
			return "no reason given"
		case 2:
			return "application context name not supported"
		case 3:
			return "calling AE title not recognized"
		case 7:
			return "called AE title not recognized"
		}
	case RejectSourceACSE:
		switch reason {
		case 1:
			return "no reason given"
		case 2:
			return "protocol version not supported"
		}
	case RejectSourcePresentation:
		switch reason {
		case 1:
			return "temporary congestion"
		case 2:
			return "local limit exceeded"
		}
	}
	return "reserved"
}

// ReleaseRQ is an A-RELEASE-RQ PDU.
type ReleaseRQ struct{}

func (*ReleaseRQ) Type() byte { return TypeReleaseRQ }
func (*ReleaseRQ) AppendTo(b []byte) []byte {
	return append(appendHeader(b, TypeReleaseRQ, 4), 0, 0, 0, 0)
}

// ReleaseRP is an A-RELEASE-RP PDU.
type ReleaseRP struct{}

func (*ReleaseRP) Type() byte { return TypeReleaseRP }
func (*ReleaseRP) AppendTo(b []byte) []byte {
	return append(appendHeader(b, TypeReleaseRP, 4), 0, 0, 0, 0)
}

// Abort is an A-ABORT PDU (PS3.8 9.3.8).
type Abort struct {
	Source byte // 0 service-user, 2 service-provider
	Reason byte // meaningful for source 2
}

// Abort sources and reasons.
const (
	AbortSourceUser     byte = 0
	AbortSourceProvider byte = 2

	AbortNotSpecified      byte = 0
	AbortUnrecognizedPDU   byte = 1
	AbortUnexpectedPDU     byte = 2
	AbortUnrecognizedParam byte = 4
	AbortUnexpectedParam   byte = 5
	AbortInvalidParamValue byte = 6
)

func (*Abort) Type() byte { return TypeAbort }
func (p *Abort) AppendTo(b []byte) []byte {
	return append(appendHeader(b, TypeAbort, 4), 0, 0, p.Source, p.Reason)
}

// String describes the abort.
func (p *Abort) String() string {
	src := "service-user"
	if p.Source == AbortSourceProvider {
		src = "service-provider"
	}
	reason := map[byte]string{0: "not specified", 1: "unrecognized PDU", 2: "unexpected PDU", 4: "unrecognized PDU parameter", 5: "unexpected PDU parameter", 6: "invalid PDU parameter value"}[p.Reason]
	return fmt.Sprintf("source %s, reason %s", src, reason)
}

// PDV is one presentation data value item of a P-DATA-TF PDU.
type PDV struct {
	ContextID byte
	Command   bool // message control header bit 0
	Last      bool // message control header bit 1
	Data      []byte
}

// PDataTF is a P-DATA-TF PDU. Decoded PDVs alias the buffer passed to Read.
type PDataTF struct {
	Items []PDV
}

func (*PDataTF) Type() byte { return TypePDataTF }
func (p *PDataTF) AppendTo(b []byte) []byte {
	n := 0
	for _, v := range p.Items {
		n += 6 + len(v.Data)
	}
	b = appendHeader(b, TypePDataTF, n)
	for _, v := range p.Items {
		b = AppendPDVHeader(b, v.ContextID, v.Command, v.Last, len(v.Data))
		b = append(b, v.Data...)
	}
	return b
}

// AppendPDVHeader appends a PDV item header for dataLen bytes of data.
func AppendPDVHeader(b []byte, ctxID byte, command, last bool, dataLen int) []byte {
	l := dataLen + 2
	var mch byte
	if command {
		mch |= 1
	}
	if last {
		mch |= 2
	}
	return append(b, byte(l>>24), byte(l>>16), byte(l>>8), byte(l), ctxID, mch)
}

// PDataHeaderLen is the P-DATA-TF header plus one PDV header.
const PDataHeaderLen = HeaderLen + 6

// AppendPDataHeader appends the header of a P-DATA-TF PDU that carries a
// single PDV of dataLen bytes; the caller appends the data.
func AppendPDataHeader(b []byte, ctxID byte, command, last bool, dataLen int) []byte {
	b = appendHeader(b, TypePDataTF, dataLen+6)
	return AppendPDVHeader(b, ctxID, command, last, dataLen)
}

func decodePDataTF(body []byte) (*PDataTF, error) {
	p := &PDataTF{}
	for len(body) > 0 {
		if len(body) < 6 {
			return nil, fmt.Errorf("%w: truncated pdv item header", ErrMalformed)
		}
		l := binary.BigEndian.Uint32(body)
		if l < 2 || uint64(l) > uint64(len(body)-4) {
			return nil, fmt.Errorf("%w: pdv item length %d with %d bytes left", ErrMalformed, l, len(body)-4)
		}
		id, mch := body[4], body[5]
		if id == 0 || id%2 == 0 {
			return nil, fmt.Errorf("%w: pdv presentation context id %d is not odd", ErrMalformed, id)
		}
		if mch&^3 != 0 {
			return nil, fmt.Errorf("%w: pdv message control header 0x%02x", ErrMalformed, mch)
		}
		p.Items = append(p.Items, PDV{ContextID: id, Command: mch&1 != 0, Last: mch&2 != 0, Data: body[6 : 4+l]})
		body = body[4+l:]
	}
	if len(p.Items) == 0 {
		return nil, fmt.Errorf("%w: p-data-tf without pdv items", ErrMalformed)
	}
	return p, nil
}
