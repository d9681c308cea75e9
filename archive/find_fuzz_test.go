package archive_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/dimse"
)

var fuzzQRClasses = []string{dimse.PatientRootFind, dimse.StudyRootFind, dimse.PatientRootMove, dimse.StudyRootMove, dimse.PatientRootGet, dimse.StudyRootGet}

// FuzzQueryIdentifier: a C-FIND, C-MOVE or C-GET identifier, as a peer
// may send it, runs against an index of a few studies, by a requestor
// with bulk-query (sel >= 128) or without. Whatever it holds
// gives matches that encode, or a DIMSE failure status with an error
// comment (dimse.StatusError), never a panic or another kind of error.
func FuzzQueryIdentifier(f *testing.F) {
	seeds := [][]string{
		{"QueryRetrieveLevel", "PATIENT", "PatientID", "P1", "PatientName", ""},
		{"QueryRetrieveLevel", "STUDY", "PatientName", "DOE*", "StudyDate", "20200101-20201231", "StudyInstanceUID", ""},
		{"QueryRetrieveLevel", "STUDY", "StudyInstanceUID", studyB + `\` + studyC},
		{"QueryRetrieveLevel", "SERIES", "StudyInstanceUID", studyA, "Modality", "CT", "SeriesInstanceUID", ""},
		{"QueryRetrieveLevel", "IMAGE", "StudyInstanceUID", studyA, "SeriesInstanceUID", studyA + ".1", "SOPInstanceUID", ""},
		{"SpecificCharacterSet", "ISO_IR 192", "QueryRetrieveLevel", "STUDY", "PatientName", "王*", "StudyTime", "-1200"},
		{"QueryRetrieveLevel", "STUDY", "PatientName", `""`, "AccessionNumber", "?23*", "ModalitiesInStudy", `CT\MR`},
	}
	for i, kv := range seeds {
		b, err := ident(f, kv...).Bytes(dicom.ExplicitVRLittleEndian)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(i))
	}
	// The bulk-query evasions (issue 14), as C-FIND without bulk-query
	// (sel < 128) and as C-MOVE, C-GET with it.
	for i, e := range evasions() {
		b, err := ident(f, e.id...).Bytes(dicom.ExplicitVRLittleEndian)
		if err != nil {
			f.Fatal(err)
		}
		cls := slices.Index(fuzzQRClasses, e.class)
		f.Add(b, uint8(cls))
		f.Add(b, uint8(128+(cls+2+2*(i%2))%len(fuzzQRClasses)))
	}
	fx := qrFixture(f)
	f.Fuzz(func(t *testing.T, b []byte, sel uint8) {
		ds, err := dicom.ReadDataSet(bytes.NewReader(b), dicom.ExplicitVRLittleEndian, 1<<16)
		if err != nil {
			return
		}
		class := fuzzQRClasses[int(sel&127)%len(fuzzQRClasses)]
		ctx := archive.WithPrincipal(context.Background(), &archive.Principal{Grant: archive.Permissions{archive.PermBulkQuery: sel >= 128}})
		if dimse.QRCommand(class) == dimse.CFindRQ {
			r := &dimse.FindRequest{Request: dimse.Request{Assoc: fx.assoc}, SOPClassUID: class, Identifier: ds, TransferSyntax: dicom.ExplicitVRLittleEndian}
			err = fx.fe().Find(ctx, r, func(m *dicom.DataSet) error {
				_, err := m.Bytes(dicom.ExplicitVRLittleEndian)
				if err != nil {
					t.Fatalf("a match does not encode: %v", err)
				}
				return nil
			})
		} else {
			_, err = fx.fe().Retrieve(ctx, &dimse.RetrieveRequest{Request: dimse.Request{Assoc: fx.assoc}, SOPClassUID: class, Identifier: ds})
		}
		var se *dimse.StatusError
		if err != nil && (!errors.As(err, &se) || dimse.CategoryOf(se.Status) != dimse.CategoryFailure || se.Comment == "") {
			t.Fatalf("%s: %v (want a failure status with a comment)", class, err)
		}
	})
}
