package dimse

import (
	"bytes"
	"reflect"
	"testing"
)

func seedCommands() []*Command {
	store := &Command{CommandField: CStoreRQ, MessageID: 7, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2", AffectedSOPInstanceUID: "1.2.3.4.5", Priority: PriorityHigh, MoveOriginatorAET: "MOVER", MoveOriginatorMessageID: 3}
	store.mark(tagCommandDataSetType, true)
	store.CommandDataSetType = 1
	rsp := &Command{CommandField: CMoveRSP, MessageIDBeingRespondedTo: 9, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.2.2.2", Status: StatusPending, ErrorComment: "odd", OffendingElement: []uint32{0x00100010, 0x0020000d}}
	rsp.SetCounts(1, 2, 3, 4, true)
	return []*Command{
		{CommandField: CEchoRQ, MessageID: 1, AffectedSOPClassUID: VerificationSOPClass},
		{CommandField: CEchoRSP, MessageIDBeingRespondedTo: 1, AffectedSOPClassUID: VerificationSOPClass, Status: StatusSuccess},
		store,
		rsp,
		{CommandField: CMoveRQ, MessageID: 2, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.2.2.2", MoveDestination: "DEST", Priority: PriorityLow},
		{CommandField: CCancelRQ, MessageIDBeingRespondedTo: 2},
	}
}

// FuzzDecodeCommand: DecodeCommand never panics, and what it decodes
// encodes to a command set that decodes to the same command.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range seedCommands() {
		f.Add(c.Encode())
	}
	f.Add([]byte{0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		enc := c.Encode()
		c2, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v\n% x", err, enc)
		}
		if enc2 := c2.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable encoding:\n% x\n% x", enc, enc2)
		}
	})
}

// Encode then Decode gives the command back.
func TestCommandRoundTrip(t *testing.T) {
	for _, c := range seedCommands() {
		got, err := DecodeCommand(c.Encode())
		if err != nil {
			t.Fatalf("%s: %v", CommandName(c.CommandField), err)
		}
		want := *c
		if want.CommandDataSetType == 0 {
			want.CommandDataSetType = NoDataSet
		}
		got.has, want.has = 0, 0
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", CommandName(c.CommandField), *got, want)
		}
	}
}
