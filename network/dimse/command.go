// Package dimse implements DICOM message exchange (PS3.7): command sets in
// Implicit VR Little Endian, statuses, the fragmentation of messages into
// P-DATA-TF PDUs and back, the service handler interfaces and the dispatcher
// that routes requests to them.
package dimse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Command fields (PS3.7 E.1).
const (
	CStoreRQ  uint16 = 0x0001
	CStoreRSP uint16 = 0x8001
	CGetRQ    uint16 = 0x0010
	CGetRSP   uint16 = 0x8010
	CFindRQ   uint16 = 0x0020
	CFindRSP  uint16 = 0x8020
	CMoveRQ   uint16 = 0x0021
	CMoveRSP  uint16 = 0x8021
	CEchoRQ   uint16 = 0x0030
	CEchoRSP  uint16 = 0x8030
	CCancelRQ uint16 = 0x0FFF
)

// CommandName names a command field.
func CommandName(f uint16) string {
	switch f {
	case CStoreRQ:
		return "C-STORE-RQ"
	case CStoreRSP:
		return "C-STORE-RSP"
	case CGetRQ:
		return "C-GET-RQ"
	case CGetRSP:
		return "C-GET-RSP"
	case CFindRQ:
		return "C-FIND-RQ"
	case CFindRSP:
		return "C-FIND-RSP"
	case CMoveRQ:
		return "C-MOVE-RQ"
	case CMoveRSP:
		return "C-MOVE-RSP"
	case CEchoRQ:
		return "C-ECHO-RQ"
	case CEchoRSP:
		return "C-ECHO-RSP"
	case CCancelRQ:
		return "C-CANCEL-RQ"
	}
	return fmt.Sprintf("command 0x%04x", f)
}

// Priorities.
const (
	PriorityMedium uint16 = 0x0000
	PriorityHigh   uint16 = 0x0001
	PriorityLow    uint16 = 0x0002
)

// NoDataSet is the Command Data Set Type value meaning no data set follows.
const NoDataSet uint16 = 0x0101

// Command element tags (group 0000).
const (
	tagGroupLength               uint32 = 0x00000000
	tagAffectedSOPClassUID       uint32 = 0x00000002
	tagRequestedSOPClassUID      uint32 = 0x00000003
	tagCommandField              uint32 = 0x00000100
	tagMessageID                 uint32 = 0x00000110
	tagMessageIDBeingRespondedTo uint32 = 0x00000120
	tagMoveDestination           uint32 = 0x00000600
	tagPriority                  uint32 = 0x00000700
	tagCommandDataSetType        uint32 = 0x00000800
	tagStatus                    uint32 = 0x00000900
	tagOffendingElement          uint32 = 0x00000901
	tagErrorComment              uint32 = 0x00000902
	tagErrorID                   uint32 = 0x00000903
	tagAffectedSOPInstanceUID    uint32 = 0x00001000
	tagRequestedSOPInstanceUID   uint32 = 0x00001001
	tagNumberOfRemaining         uint32 = 0x00001020
	tagNumberOfCompleted         uint32 = 0x00001021
	tagNumberOfFailed            uint32 = 0x00001022
	tagNumberOfWarning           uint32 = 0x00001023
	tagMoveOriginatorAET         uint32 = 0x00001030
	tagMoveOriginatorMessageID   uint32 = 0x00001031
)

// MaxCommandLength bounds a command set: real ones are a few hundred bytes.
const MaxCommandLength = 64 * 1024

// ErrBadCommand: a command set could not be decoded.
var ErrBadCommand = errors.New("dimse: malformed command set")

// Command is a decoded command set. Fields absent from the wire are zero;
// Has tells which were present.
type Command struct {
	CommandField              uint16
	MessageID                 uint16
	MessageIDBeingRespondedTo uint16
	AffectedSOPClassUID       string
	RequestedSOPClassUID      string
	AffectedSOPInstanceUID    string
	RequestedSOPInstanceUID   string
	MoveDestination           string
	Priority                  uint16
	CommandDataSetType        uint16
	Status                    uint16
	OffendingElement          []uint32
	ErrorComment              string
	ErrorID                   uint16
	NumberOfRemaining         uint16
	NumberOfCompleted         uint16
	NumberOfFailed            uint16
	NumberOfWarning           uint16
	MoveOriginatorAET         string
	MoveOriginatorMessageID   uint16

	// has holds a bit (elementBit) for each command element present
	// (decoded) or set.
	has uint32
}

// commandTags are the command elements this package knows, in the order
// of their bits in Command.has.
var commandTags = [...]uint32{
	tagGroupLength, tagAffectedSOPClassUID, tagRequestedSOPClassUID, tagCommandField, tagMessageID,
	tagMessageIDBeingRespondedTo, tagMoveDestination, tagPriority, tagCommandDataSetType, tagStatus,
	tagOffendingElement, tagErrorComment, tagErrorID, tagAffectedSOPInstanceUID, tagRequestedSOPInstanceUID,
	tagNumberOfRemaining, tagNumberOfCompleted, tagNumberOfFailed, tagNumberOfWarning,
	tagMoveOriginatorAET, tagMoveOriginatorMessageID,
}

// elementBit is the bit of a known command element in Command.has, 0 for
// others.
func elementBit(tag uint32) uint32 {
	for i, t := range commandTags {
		if t == tag {
			return 1 << i
		}
	}
	return 0
}

// Has reports whether a command element was present (decoded) or set;
// false for elements this package does not know.
func (c *Command) Has(tag uint32) bool { return c.has&elementBit(tag) != 0 }

// mark records that a command element is present (or not).
func (c *Command) mark(tag uint32, present bool) {
	if present {
		c.has |= elementBit(tag)
	} else {
		c.has &^= elementBit(tag)
	}
}

// HasDataSet reports whether a data set follows the command.
func (c *Command) HasDataSet() bool { return c.CommandDataSetType != NoDataSet }

// Tags of the optional counters, exported for callers that test Has.
const (
	TagNumberOfRemaining = tagNumberOfRemaining
	TagNumberOfCompleted = tagNumberOfCompleted
	TagNumberOfFailed    = tagNumberOfFailed
	TagNumberOfWarning   = tagNumberOfWarning
	TagErrorComment      = tagErrorComment
	TagOffendingElement  = tagOffendingElement
)

// SetCounts sets the sub-operation counters (C-MOVE/C-GET responses).
func (c *Command) SetCounts(remaining, completed, failed, warning uint16, withRemaining bool) {
	c.NumberOfRemaining, c.NumberOfCompleted, c.NumberOfFailed, c.NumberOfWarning = remaining, completed, failed, warning
	c.mark(tagNumberOfRemaining, withRemaining)
	c.mark(tagNumberOfCompleted, true)
	c.mark(tagNumberOfFailed, true)
	c.mark(tagNumberOfWarning, true)
}

// MaxLO is the most characters a value of VR LO holds (PS3.5 6.2), such
// as Error Comment (0000,0902).
const MaxLO = 64

// TruncateLO cuts s to at most MaxLO bytes (so MaxLO characters
// whatever the character set) at a character boundary: a multi-byte
// UTF-8 sequence is never split.
func TruncateLO(s string) string {
	if len(s) <= MaxLO {
		return s
	}
	n := MaxLO
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// appendText appends an element of a string value padded to even length
// with pad (NUL for UI, space for text).
func appendText(b []byte, tag uint32, s string, pad byte) []byte {
	n := len(s) + len(s)&1
	b = appendElemHeader(b, tag, n)
	b = append(b, s...)
	if n > len(s) {
		b = append(b, pad)
	}
	return b
}

// appendAE appends an AE element: 16 bytes, cut or padded with spaces.
func appendAE(b []byte, tag uint32, s string) []byte {
	b = appendElemHeader(b, tag, 16)
	if len(s) > 16 {
		s = s[:16]
	}
	b = append(b, s...)
	for range 16 - len(s) {
		b = append(b, ' ')
	}
	return b
}

// appendUS appends a US element.
func appendUS(b []byte, tag uint32, v uint16) []byte {
	return binary.LittleEndian.AppendUint16(appendElemHeader(b, tag, 2), v)
}

func usValue(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }

// Encode returns the command set in Implicit VR Little Endian, with the
// group length first. Which elements are written depends on the command.
func (c *Command) Encode() []byte { return c.appendTo(make([]byte, 0, 160)) }

// appendTo appends the command set (Encode) to b. The elements are
// appended in ascending tag order, as PS3.5 7.1 wants, and the group
// length is filled in at the end.
func (c *Command) appendTo(b []byte) []byte {
	start := len(b)
	b = appendElemHeader(b, tagGroupLength, 4)
	b = binary.LittleEndian.AppendUint32(b, 0)
	if c.AffectedSOPClassUID != "" {
		b = appendText(b, tagAffectedSOPClassUID, c.AffectedSOPClassUID, 0)
	}
	if c.RequestedSOPClassUID != "" {
		b = appendText(b, tagRequestedSOPClassUID, c.RequestedSOPClassUID, 0)
	}
	b = appendUS(b, tagCommandField, c.CommandField)
	isRSP := c.CommandField&0x8000 != 0
	switch {
	case isRSP || c.CommandField == CCancelRQ:
		b = appendUS(b, tagMessageIDBeingRespondedTo, c.MessageIDBeingRespondedTo)
	default:
		b = appendUS(b, tagMessageID, c.MessageID)
	}
	if c.MoveDestination != "" {
		b = appendAE(b, tagMoveDestination, c.MoveDestination)
	}
	if !isRSP && c.CommandField != CCancelRQ && c.CommandField != CEchoRQ {
		b = appendUS(b, tagPriority, c.Priority)
	}
	dst := c.CommandDataSetType
	if dst == 0 && !c.Has(tagCommandDataSetType) {
		dst = NoDataSet
	}
	b = appendUS(b, tagCommandDataSetType, dst)
	if isRSP {
		b = appendUS(b, tagStatus, c.Status)
		if len(c.OffendingElement) > 0 {
			b = appendElemHeader(b, tagOffendingElement, 4*len(c.OffendingElement))
			for _, t := range c.OffendingElement {
				b = append(b, byte(t>>16), byte(t>>24), byte(t), byte(t>>8))
			}
		}
		if c.ErrorComment != "" {
			b = appendText(b, tagErrorComment, TruncateLO(c.ErrorComment), ' ')
		}
		if c.Has(tagErrorID) {
			b = appendUS(b, tagErrorID, c.ErrorID)
		}
	}
	if c.AffectedSOPInstanceUID != "" {
		b = appendText(b, tagAffectedSOPInstanceUID, c.AffectedSOPInstanceUID, 0)
	}
	if c.RequestedSOPInstanceUID != "" {
		b = appendText(b, tagRequestedSOPInstanceUID, c.RequestedSOPInstanceUID, 0)
	}
	for _, t := range [...]uint32{tagNumberOfRemaining, tagNumberOfCompleted, tagNumberOfFailed, tagNumberOfWarning} {
		if c.Has(t) {
			b = appendUS(b, t, c.counter(t))
		}
	}
	if c.MoveOriginatorAET != "" {
		b = appendAE(b, tagMoveOriginatorAET, c.MoveOriginatorAET)
		b = appendUS(b, tagMoveOriginatorMessageID, c.MoveOriginatorMessageID)
	}
	binary.LittleEndian.PutUint32(b[start+8:], uint32(len(b)-start-12))
	return b
}

func (c *Command) counter(t uint32) uint16 {
	switch t {
	case tagNumberOfRemaining:
		return c.NumberOfRemaining
	case tagNumberOfCompleted:
		return c.NumberOfCompleted
	case tagNumberOfFailed:
		return c.NumberOfFailed
	}
	return c.NumberOfWarning
}

func appendElemHeader(b []byte, tag uint32, n int) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
	b = binary.LittleEndian.AppendUint16(b, uint16(tag))
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

// DecodeCommand decodes an Implicit VR Little Endian command set.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) > MaxCommandLength {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCommand, len(b))
	}
	c := &Command{}
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: truncated element header", ErrBadCommand)
		}
		tag := uint32(binary.LittleEndian.Uint16(b))<<16 | uint32(binary.LittleEndian.Uint16(b[2:]))
		l := binary.LittleEndian.Uint32(b[4:])
		if uint64(l) > uint64(len(b)-8) {
			return nil, fmt.Errorf("%w: element %08x declares %d bytes, %d left", ErrBadCommand, tag, l, len(b)-8)
		}
		v := b[8 : 8+l]
		b = b[8+l:]
		if tag>>16 != 0 {
			return nil, fmt.Errorf("%w: element (%04x,%04x) outside group 0000", ErrBadCommand, tag>>16, tag&0xffff)
		}
		c.mark(tag, true)
		us := func() (uint16, error) {
			if len(v) != 2 {
				return 0, fmt.Errorf("%w: element %08x of length %d, want 2", ErrBadCommand, tag, len(v))
			}
			return binary.LittleEndian.Uint16(v), nil
		}
		var err error
		switch tag {
		case tagAffectedSOPClassUID:
			c.AffectedSOPClassUID = trimUI(v)
		case tagRequestedSOPClassUID:
			c.RequestedSOPClassUID = trimUI(v)
		case tagAffectedSOPInstanceUID:
			c.AffectedSOPInstanceUID = trimUI(v)
		case tagRequestedSOPInstanceUID:
			c.RequestedSOPInstanceUID = trimUI(v)
		case tagCommandField:
			c.CommandField, err = us()
		case tagMessageID:
			c.MessageID, err = us()
		case tagMessageIDBeingRespondedTo:
			c.MessageIDBeingRespondedTo, err = us()
		case tagMoveDestination:
			c.MoveDestination = strings.TrimSpace(string(v))
		case tagPriority:
			c.Priority, err = us()
		case tagCommandDataSetType:
			c.CommandDataSetType, err = us()
		case tagStatus:
			c.Status, err = us()
		case tagOffendingElement:
			for i := 0; i+4 <= len(v); i += 4 {
				c.OffendingElement = append(c.OffendingElement, uint32(binary.LittleEndian.Uint16(v[i:]))<<16|uint32(binary.LittleEndian.Uint16(v[i+2:])))
			}
		case tagErrorComment:
			c.ErrorComment = strings.TrimRight(string(v), " \x00")
		case tagErrorID:
			c.ErrorID, err = us()
		case tagNumberOfRemaining:
			c.NumberOfRemaining, err = us()
		case tagNumberOfCompleted:
			c.NumberOfCompleted, err = us()
		case tagNumberOfFailed:
			c.NumberOfFailed, err = us()
		case tagNumberOfWarning:
			c.NumberOfWarning, err = us()
		case tagMoveOriginatorAET:
			c.MoveOriginatorAET = strings.TrimSpace(string(v))
		case tagMoveOriginatorMessageID:
			c.MoveOriginatorMessageID, err = us()
		}
		if err != nil {
			return nil, err
		}
	}
	if !c.Has(tagCommandField) {
		return nil, fmt.Errorf("%w: no command field", ErrBadCommand)
	}
	if !c.Has(tagCommandDataSetType) {
		return nil, fmt.Errorf("%w: no command data set type", ErrBadCommand)
	}
	return c, nil
}

func trimUI(v []byte) string { return strings.TrimRight(string(v), "\x00 ") }
