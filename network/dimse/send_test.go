package dimse

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
)

// TestSendChecksConversion: an object the peer takes only converted, whose
// conversion fails, fails its own sub-operation before anything is sent
// (when its size is known and within ConvertCheckLimit), so that the
// association carries on with the next object.
func TestSendChecksConversion(t *testing.T) {
	const ctClass = "1.2.840.10008.5.1.4.1.1.2"
	ctxs := map[byte]*assoc.Context{1: {ID: 1, AbstractSyntax: ctClass, TransferSyntax: dicom.ImplicitVRLittleEndian.UID}}
	ds := &dicom.DataSet{}
	// Referenced Image Sequence (SQ in the dictionary) sent as LO:
	// implicit VR would read its value as items.
	ds.Put(&dicom.Element{Tag: dicom.NewTag(0x0008, 0x1140), VR: "LO", Value: []byte("00000000")})
	ds.Put(&dicom.Element{Tag: dicom.PatientID, VR: "LO", Value: []byte("P1")})
	bad, err := ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	good := &dicom.DataSet{}
	good.Put(&dicom.Element{Tag: dicom.PatientID, VR: "LO", Value: []byte("P1")})
	goodBytes, _ := good.Bytes(dicom.ExplicitVRLittleEndian)

	inst := func(b []byte, size int64) *Instance {
		return &Instance{SOPClassUID: ctClass, SOPInstanceUID: "1.2.3", TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID, Size: size,
			Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	var sent []byte
	send := func(_ context.Context, _ byte, _ *Command, data io.Reader) (*Command, error) {
		b, err := io.ReadAll(data)
		sent = b
		if err != nil {
			return nil, err // as WriteMessage: the association is aborted
		}
		return &Command{Status: StatusSuccess}, nil
	}
	ctx := context.Background()

	_, err = sendInstance(ctx, ctxs, nil, inst(bad, int64(len(bad))), &Command{}, send)
	var sub *SubOpError
	if !errors.As(err, &sub) || !errors.Is(err, dicom.ErrNotConvertible) {
		t.Fatalf("unconvertible object of known size: got %v, want a SubOpError wrapping ErrNotConvertible", err)
	}
	if sent != nil {
		t.Fatalf("%d bytes sent of an object that does not convert", len(sent))
	}
	// Size unknown: not checked first, and the failure comes mid-send.
	if _, err := sendInstance(ctx, ctxs, nil, inst(bad, 0), &Command{}, send); err == nil || errors.As(err, &sub) {
		t.Fatalf("unchecked object: got %v, want a send error", err)
	}
	sent = nil
	if rsp, err := sendInstance(ctx, ctxs, nil, inst(goodBytes, int64(len(goodBytes))), &Command{}, send); err != nil || rsp.Status != StatusSuccess {
		t.Fatalf("convertible object: %v", err)
	}
	back, err := dicom.ReadDataSet(bytes.NewReader(sent), dicom.ImplicitVRLittleEndian, 1<<20)
	if err != nil || back.String(dicom.PatientID) != "P1" {
		t.Fatalf("sent %q: %v", sent, err)
	}
}
