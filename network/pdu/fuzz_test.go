package pdu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"testing"
)

// fuzzLimit is the PDU length limit the fuzz targets read with.
const fuzzLimit = 64 << 10

// seedPDUs are complete PDUs built with the package's own encoders; the
// files in testdata/fuzz were captured from DCMTK echoscu and storescu.
func seedPDUs() [][]byte {
	rq := &AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "SCU",
		Contexts: []PresentationContext{
			{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}},
			{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{"1.2.840.10008.1.2.4.50"}},
		},
		UserInfo: UserInfo{MaxLength: 16384, ImplementationClassUID: "1.2.3.4", ImplementationVersionName: "WARD",
			AsyncWindow:    &AsyncWindow{Invoked: 1, Performed: 1},
			Roles:          []RoleSelection{{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SCU: true, SCP: true}},
			Extended:       []ExtendedNegotiation{{SOPClassUID: "1.2.840.10008.5.1.4.1.2.2.1", Info: []byte{1, 1, 0}}},
			CommonExtended: []CommonExtendedNegotiation{{SOPClassUID: "1.2.3", ServiceClassUID: "1.2.840.10008.4.2", RelatedGeneralSOPClasses: []string{"1.2.4", "1.2.5"}}},
			UserIdentity:   &UserIdentity{Type: IdentityUsernamePasscode, PositiveResponse: true, Primary: []byte("user"), Secondary: []byte("secret")},
		}}
	ac := &AssociateAC{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "SCU",
		Contexts: []PresentationContext{{ID: 1, Result: ResultAcceptance, TransferSyntaxes: []string{"1.2.840.10008.1.2"}}, {ID: 3, Result: ResultAbstractSyntaxNotSupported, TransferSyntaxes: []string{""}}},
		UserInfo: UserInfo{MaxLength: 0, ImplementationClassUID: "1.2.3.4", UserIdentityResponse: []byte("ok"), HasIdentityResponse: true}}
	return [][]byte{
		rq.AppendTo(nil),
		ac.AppendTo(nil),
		(&AssociateRJ{Result: RejectPermanent, Source: RejectSourceUser, Reason: RejectCalledAENotRecognized}).AppendTo(nil),
		(&PDataTF{Items: []PDV{{ContextID: 1, Command: true, Last: true, Data: []byte{0, 0, 0, 0, 4, 0, 0, 0, 0x38, 0, 0, 0}}, {ContextID: 1, Last: false, Data: []byte("data")}}}).AppendTo(nil),
		(&ReleaseRQ{}).AppendTo(nil),
		(&ReleaseRP{}).AppendTo(nil),
		(&Abort{Source: AbortSourceProvider, Reason: AbortUnexpectedPDU}).AppendTo(nil),
		{TypeAssociateRQ, 0, 0xFF, 0xFF, 0xFF, 0xFF},
		{TypePDataTF, 0, 0, 0, 0, 8, 0xFF, 0xFF, 0xFF, 0xFF, 1, 3},
	}
}

// FuzzPDURead: Read never panics, never keeps a buffer larger than its
// limit, and what it decodes encodes back to what it read.
func FuzzPDURead(f *testing.F) {
	for _, s := range seedPDUs() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, buf, err := Read(bytes.NewReader(data), fuzzLimit, nil)
		if cap(buf) > fuzzLimit {
			t.Fatalf("buffer of %d bytes with a %d limit", cap(buf), fuzzLimit)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrTooLong) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		n := HeaderLen + int(binary.BigEndian.Uint32(data[2:]))
		enc := p.AppendTo(nil)
		switch p.(type) {
		case *PDataTF:
			// P-DATA-TF encodes exactly what was read, but for the
			// header's reserved byte.
			if enc[0] != data[0] || !bytes.Equal(enc[2:], data[2:n]) {
				t.Fatalf("re-encoded % x, read % x", enc, data[:n])
			}
		default:
			// Others are normalised (reserved fields, padding, unknown
			// sub-items); the normal form must be stable.
			p2, _, err := Read(bytes.NewReader(enc), fuzzLimit, nil)
			if err != nil {
				t.Fatalf("re-encoded pdu does not decode: %v\n% x", err, enc)
			}
			if enc2 := p2.AppendTo(nil); !bytes.Equal(enc, enc2) {
				t.Fatalf("unstable encoding:\n% x\n% x", enc, enc2)
			}
		}
	})
}

// FuzzAssociateRQ: decode, encode, decode gives the same request and the
// same bytes.
func FuzzAssociateRQ(f *testing.F) {
	for _, s := range seedPDUs()[:1] {
		f.Add(s[HeaderLen:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := Decode(TypeAssociateRQ, body)
		if err != nil {
			return
		}
		enc := p.AppendTo(nil)
		p2, err := Decode(TypeAssociateRQ, enc[HeaderLen:])
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalRQ(p.(*AssociateRQ)), normalRQ(p2.(*AssociateRQ))) {
			t.Fatalf("decode/encode/decode differs:\n%+v\n%+v", p, p2)
		}
		if enc2 := p2.AppendTo(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable encoding:\n% x\n% x", enc, enc2)
		}
	})
}

// normalRQ drops what the encoding does not carry: the protocol version
// (always 1 on the wire) and the reserved byte a request's presentation
// context decodes into Result (DCMTK sends 0xFF there).
func normalRQ(rq *AssociateRQ) AssociateRQ {
	c := *rq
	c.ProtocolVersion = 0
	c.Contexts = append([]PresentationContext(nil), rq.Contexts...)
	for i := range c.Contexts {
		c.Contexts[i].Result = 0
	}
	if c.ApplicationContext == "" {
		c.ApplicationContext = ApplicationContextName
	}
	return c
}

// A declared length of 4 GB is refused before anything is allocated.
func TestReadRefuses4GB(t *testing.T) {
	hdr := []byte{TypePDataTF, 0, 0xFF, 0xFF, 0xFF, 0xFF}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	_, buf, err := Read(bytes.NewReader(hdr), fuzzLimit, nil)
	runtime.ReadMemStats(&ms1)
	if !errors.Is(err, ErrTooLong) {
		t.Fatalf("err %v, want ErrTooLong", err)
	}
	if buf != nil {
		t.Fatalf("a buffer of %d bytes was made", cap(buf))
	}
	// TotalAlloc is process-wide (the runtime and other tests allocate
	// too): the bound only proves that nothing near the declared 4 GB was
	// made; AllocsPerRun below is the precise check.
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<20 {
		t.Fatalf("%d bytes allocated", d)
	}
	// A few small allocations for the header and the error, nothing more.
	if n := testing.AllocsPerRun(100, func() { Read(bytes.NewReader(hdr), fuzzLimit, nil) }); n > 8 {
		t.Fatalf("%v allocations per refused read", n)
	}
}
