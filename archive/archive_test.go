package archive_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/dimsearchive"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/fsblob"
	"github.com/ward-pacs/ward/store/sqlite"
)

// pydicomData is where Debian's python3-pydicom keeps its test files.
const pydicomData = "/usr/lib/python3/dist-packages/pydicom/data"

// SOP classes used here.
const (
	ctImageStorage = "1.2.840.10008.5.1.4.1.1.2"
	mrImageStorage = "1.2.840.10008.5.1.4.1.1.4"
)

// testFile returns a pydicom test file, skipping (failing under CI=true)
// when pydicom's data is not installed.
func testFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(pydicomData, rel)
	if _, err := os.Stat(p); err != nil {
		testci.SkipOrFail(t, "%s missing: %v", p, err)
	}
	return p
}

// fixture is an opened Archive over a sqlite index and an fs blob store in
// a temporary directory.
type fixture struct {
	ar    *archive.Archive
	idx   *sqlite.DB
	blobs *fsblob.Store
	dir   string
	assoc *assoc.Association
}

func newFixture(t testing.TB, policy archive.DuplicatePolicy) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	idx, bs := openStores(t, dir)
	t.Cleanup(func() { bs.Close(); idx.Close() })
	ar := &archive.Archive{Index: idx, Blobs: bs, OnDuplicate: policy}
	if err := ar.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ar.Close) // before the stores close
	return &fixture{ar: ar, idx: idx, blobs: bs, dir: dir, assoc: pipeAssociation(t)}
}

// pipeAssociation establishes a real association over net.Pipe and returns
// the acceptor's side, which is what the dispatcher hands a handler.
func pipeAssociation(t testing.TB) *assoc.Association {
	t.Helper()
	cs, ss := net.Pipe()
	cfg := assoc.Config{ARTIMTimeout: 5 * time.Second, MaxPDULength: 64 << 10}
	type result struct {
		a   *assoc.Association
		err error
	}
	served := make(chan result, 1)
	go func() {
		acc := &assoc.Acceptor{
			AETitle:      "WARD",
			MaxPDULength: 64 << 10,
			TransferSyntaxes: func(*pdu.AssociateRQ, net.Addr, string) ([]string, func(string) bool, bool) {
				return []string{dicom.ExplicitVRLittleEndian.UID}, nil, true
			},
		}
		scfg := cfg
		scfg.AETitle = "WARD"
		a, err := assoc.Serve(ss, scfg, acc)
		served <- result{a, err}
	}()
	ccfg := cfg
	ccfg.AETitle = "TESTSCU"
	rq := &pdu.AssociateRQ{
		ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "TESTSCU",
		ApplicationContext: pdu.ApplicationContextName,
		Contexts:           []pdu.PresentationContext{{ID: 1, AbstractSyntax: ctImageStorage, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID}}},
	}
	client, err := assoc.Request(context.Background(), cs, ccfg, rq)
	if err != nil {
		t.Fatalf("association: %v", err)
	}
	r := <-served
	if r.err != nil {
		t.Fatalf("association (acceptor): %v", r.err)
	}
	t.Cleanup(func() { client.Abort(); r.a.Abort() })
	return r.a
}

// object is a data set to store, in Explicit VR Little Endian.
type object struct {
	class, inst string
	ds          *dicom.DataSet
}

func (o *object) bytes(t testing.TB) []byte {
	t.Helper()
	b, err := o.ds.Bytes(dicom.ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readObject reads a Part 10 test file (Explicit VR Little Endian).
func readObject(t *testing.T, path string) *object {
	t.Helper()
	meta, rc, err := dicom.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if meta.TransferSyntaxUID != dicom.ExplicitVRLittleEndian.UID {
		t.Fatalf("%s: transfer syntax %s, want Explicit VR Little Endian", path, meta.TransferSyntaxUID)
	}
	ds, err := dicom.ReadDataSet(rc, dicom.ExplicitVRLittleEndian, 1<<24)
	if err != nil {
		t.Fatal(err)
	}
	return &object{class: ds.String(dicom.SOPClassUID), inst: ds.String(dicom.SOPInstanceUID), ds: ds}
}

// ctObject is CT_small.dcm with its SOP Instance UID set to uid.
func ctObject(t *testing.T, uid string) *object {
	t.Helper()
	o := readObject(t, testFile(t, "test_files/CT_small.dcm"))
	o.ds.Set(dicom.SOPInstanceUID, uid)
	o.inst = uid
	return o
}

// fe is the DIMSE front end over the archive: the tests drive it as the
// dispatcher does, so that they pin the statuses and comments peers get.
func (f *fixture) fe() *dimsearchive.Service { return &dimsearchive.Service{Archive: f.ar} }

// store runs one C-STORE of data with the command's UIDs from o.
func (f *fixture) store(o *object, data []byte) error {
	return f.fe().Store(context.Background(), &dimse.StoreRequest{
		Request:           dimse.Request{Assoc: f.assoc, ContextID: 1},
		SOPClassUID:       o.class,
		SOPInstanceUID:    o.inst,
		TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID,
		Data:              bytes.NewReader(data),
	})
}

// files lists the regular files under dir/sub (relative names).
func (f *fixture) files(t *testing.T, sub string) []string {
	t.Helper()
	var out []string
	root := filepath.Join(f.dir, sub)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dataSetOf returns the data set bytes of the stored instance uid (the blob
// without Ward's Part 10 header).
func (f *fixture) dataSetOf(t *testing.T, uid string) []byte {
	t.Helper()
	ctx := context.Background()
	in, err := f.idx.Get(ctx, uid)
	if err != nil {
		t.Fatalf("index Get %s: %v", uid, err)
	}
	rc, err := f.blobs.Open(ctx, in.BlobKey)
	if err != nil {
		t.Fatalf("blob of %s: %v", uid, err)
	}
	defer rc.Close()
	meta, br, err := dicom.ReadFileHeader(rc, 1<<20)
	if err != nil {
		t.Fatalf("stored file header: %v", err)
	}
	if meta.MediaStorageSOPInstanceUID != uid {
		t.Errorf("stored header names %q, want %q", meta.MediaStorageSOPInstanceUID, uid)
	}
	b, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkNothingStored asserts that a refused C-STORE left no trace and that
// wantCount instances are stored, each as one published file. It first
// lets the archive finish the work it does after responses (publishing,
// deleting replaced blobs); later stores then finish it before returning.
func (f *fixture) checkNothingStored(t *testing.T, uid string, wantCount int64) {
	t.Helper()
	ctx := context.Background()
	f.ar.Close()
	if uid != "" {
		if _, err := f.idx.Get(ctx, uid); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("refused instance visible in the index: %v", err)
		}
	}
	if n, err := f.idx.CountInstances(ctx); err != nil || n != wantCount {
		t.Errorf("CountInstances = %d, %v; want %d", n, err, wantCount)
	}
	if fs := f.files(t, "tmp"); len(fs) != 0 {
		t.Errorf("tmp/ holds %d files, e.g. %s", len(fs), fs[0])
	}
	// pending/ may hold empty files: fsblob creates slots for new blobs
	// ahead of time. Nothing with bytes in it may stay there.
	for _, name := range f.files(t, "pending") {
		if fi, err := os.Stat(filepath.Join(f.dir, "pending", name)); err == nil && fi.Size() > 0 {
			t.Errorf("pending/%s holds %d bytes", name, fi.Size())
		}
	}
	if fs := f.files(t, "objects"); int64(len(fs)) != wantCount {
		t.Errorf("objects/ holds %d files, want %d", len(fs), wantCount)
	}
}

func wantStatus(t *testing.T, err error, status uint16, comment string) *dimse.StatusError {
	t.Helper()
	var se *dimse.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("Store error = %v, want a *dimse.StatusError with status 0x%04X", err, status)
	}
	if se.Status != status {
		t.Fatalf("status = 0x%04X (%s), want 0x%04X", se.Status, se.Comment, status)
	}
	if !strings.Contains(se.Comment, comment) {
		t.Errorf("comment = %q, want it to mention %q", se.Comment, comment)
	}
	return se
}

func TestStoreIndexesAndKeepsDataSet(t *testing.T) {
	f := newFixture(t, "")
	o := ctObject(t, "1.2.826.0.1.3680043.10.1.1")
	data := o.bytes(t)
	if err := f.store(o, data); err != nil {
		t.Fatal(err)
	}
	if got := f.dataSetOf(t, o.inst); !bytes.Equal(got, data) {
		t.Errorf("stored data set (%d bytes) differs from the one sent (%d bytes)", len(got), len(data))
	}
	in, err := f.idx.Get(context.Background(), o.inst)
	if err != nil {
		t.Fatal(err)
	}
	if in.SourceAET != "TESTSCU" || in.StudyInstanceUID != o.ds.String(dicom.StudyInstanceUID) || in.Modality != "CT" || in.Rows != 128 {
		t.Errorf("indexed %+v", in)
	}
	f.checkNothingStored(t, "", 1)
}

// TestDuplicatePolicies checks the re-sent SOP Instance UID policies
// documented on archive.DuplicatePolicy.
func TestDuplicatePolicies(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.10.1.2"
	for _, tc := range []struct {
		policy    archive.DuplicatePolicy
		status    uint16 // of the second store
		keepsNews bool   // the index then holds the second content
	}{
		{"", dimse.StatusSuccess, true}, // default: replace
		{archive.DuplicateReplace, dimse.StatusSuccess, true},
		{archive.DuplicateKeep, dimse.StatusSuccess, false},
		{archive.DuplicateReject, dimse.StatusDuplicateSOPInstance, false},
	} {
		name := string(tc.policy)
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, tc.policy)
			older := ctObject(t, uid)
			older.ds.Set(dicom.PatientName, "Older^Copy")
			newer := ctObject(t, uid)
			newer.ds.Set(dicom.PatientName, "Newer^Copy")
			oldData, newData := older.bytes(t), newer.bytes(t)
			if err := f.store(older, oldData); err != nil {
				t.Fatal(err)
			}
			err := f.store(newer, newData)
			if tc.status == dimse.StatusSuccess {
				if err != nil {
					t.Fatalf("second store: %v", err)
				}
			} else {
				wantStatus(t, err, tc.status, "already stored")
			}
			want, wantName := oldData, "Older^Copy"
			if tc.keepsNews {
				want, wantName = newData, "Newer^Copy"
			}
			if got := f.dataSetOf(t, uid); !bytes.Equal(got, want) {
				t.Errorf("stored data set is not the expected copy (want %s)", wantName)
			}
			in, _ := f.idx.Get(context.Background(), uid)
			if in.PatientName != wantName {
				t.Errorf("indexed PatientName = %q, want %q", in.PatientName, wantName)
			}
			// Exactly one copy: one object file, nothing pending or in
			// flight, no replaced blob waiting for deletion.
			f.checkNothingStored(t, "", 1)
			if keys, err := f.idx.PendingBlobDeletes(context.Background(), 10); err != nil || len(keys) != 0 {
				t.Errorf("PendingBlobDeletes = %v, %v; want none", keys, err)
			}
		})
	}
}

func TestInstanceMismatch(t *testing.T) {
	f := newFixture(t, "")
	o := ctObject(t, "1.2.826.0.1.3680043.10.1.3")
	data := o.bytes(t)
	o.inst = "1.2.826.0.1.3680043.10.1.4" // the command names another instance
	se := wantStatus(t, f.store(o, data), dimse.StatusDataSetMismatch, "differs from the C-STORE request")
	if len(se.Offending) != 1 || se.Offending[0] != uint32(dicom.SOPInstanceUID) {
		t.Errorf("offending = %x, want (0008,0018)", se.Offending)
	}
	f.checkNothingStored(t, o.inst, 0)
	f.checkNothingStored(t, "1.2.826.0.1.3680043.10.1.3", 0)

	// The SOP Class UID is checked too.
	o = ctObject(t, "1.2.826.0.1.3680043.10.1.5")
	data = o.bytes(t)
	o.class = mrImageStorage
	se = wantStatus(t, f.store(o, data), dimse.StatusDataSetMismatch, "differs from the C-STORE request")
	if len(se.Offending) != 1 || se.Offending[0] != uint32(dicom.SOPClassUID) {
		t.Errorf("offending = %x, want (0008,0016)", se.Offending)
	}
	f.checkNothingStored(t, o.inst, 0)
}

func TestMissingStudyOrSeries(t *testing.T) {
	for _, tag := range []dicom.Tag{dicom.StudyInstanceUID, dicom.SeriesInstanceUID} {
		t.Run(dicom.Keyword(tag), func(t *testing.T) {
			f := newFixture(t, "")
			o := ctObject(t, "1.2.826.0.1.3680043.10.1.6")
			o.ds.Delete(tag)
			se := wantStatus(t, f.store(o, o.bytes(t)), dimse.StatusDataSetMismatch, dicom.Keyword(tag))
			if len(se.Offending) != 1 || se.Offending[0] != uint32(tag) {
				t.Errorf("offending = %x, want %08x", se.Offending, uint32(tag))
			}
			f.checkNothingStored(t, o.inst, 0)
		})
	}
}

func TestMalformedDataSet(t *testing.T) {
	o := ctObject(t, "1.2.826.0.1.3680043.10.1.7")
	data := o.bytes(t)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated", data[:len(data)-1000]},
		{"length beyond the end", append(bytes.Clone(data[:len(data)-len(data)%2]), 0x10, 0x00, 0x10, 0x00, 'P', 'N', 0xF0, 0xFF)},
		{"garbage", bytes.Repeat([]byte{0xFF, 0xFE, 0x00}, 300)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "")
			wantStatus(t, f.store(o, tc.data), dimse.StatusCannotUnderstand, "cannot parse the data set")
			f.checkNothingStored(t, o.inst, 0)
		})
	}
}

// TestUnknownTransferSyntax: an unknown but valid UID is taken for an
// encapsulated syntax (dicom.LookupTransferSyntax); an invalid one is
// refused.
func TestUnknownTransferSyntax(t *testing.T) {
	f := newFixture(t, "")
	o := ctObject(t, "1.2.826.0.1.3680043.10.1.8")
	err := f.fe().Store(context.Background(), &dimse.StoreRequest{
		Request:     dimse.Request{Assoc: f.assoc, ContextID: 1},
		SOPClassUID: o.class, SOPInstanceUID: o.inst, TransferSyntaxUID: "not a UID",
		Data: bytes.NewReader(o.bytes(t)),
	})
	wantStatus(t, err, dimse.StatusCannotUnderstand, "unknown transfer syntax")
	f.checkNothingStored(t, o.inst, 0)
}

func TestCharsetIndexed(t *testing.T) {
	t.Run("ISO 2022 IR 87 decoded to UTF-8", func(t *testing.T) {
		f := newFixture(t, "")
		o := readObject(t, testFile(t, "charset_files/chrH31.dcm"))
		if err := f.store(o, o.bytes(t)); err != nil {
			t.Fatal(err)
		}
		in, err := f.idx.Get(context.Background(), o.inst)
		if err != nil {
			t.Fatal(err)
		}
		const want = "Yamada^Tarou=山田^太郎=やまだ^たろう"
		if in.PatientName != want {
			t.Errorf("indexed PatientName = %q, want %q", in.PatientName, want)
		}
		if in.CharsetUnsupported {
			t.Error("flagged CharsetUnsupported")
		}
		if in.SpecificCharacterSet != `\ISO 2022 IR 87` {
			t.Errorf("SpecificCharacterSet = %q", in.SpecificCharacterSet)
		}
	})
	t.Run("unknown charset flagged and kept as received", func(t *testing.T) {
		f := newFixture(t, "")
		o := ctObject(t, "1.2.826.0.1.3680043.10.1.9")
		o.ds.Set(dicom.SpecificCharacterSet, "ISO_IR 999")
		o.ds.Put(&dicom.Element{Tag: dicom.PatientName, VR: "PN", Value: []byte("Doe^Jane")})
		data := o.bytes(t)
		if err := f.store(o, data); err != nil {
			t.Fatal(err)
		}
		in, err := f.idx.Get(context.Background(), o.inst)
		if err != nil {
			t.Fatal(err)
		}
		if !in.CharsetUnsupported {
			t.Error("not flagged CharsetUnsupported")
		}
		if in.SpecificCharacterSet != "ISO_IR 999" || in.PatientName != "Doe^Jane" {
			t.Errorf("indexed charset %q, name %q", in.SpecificCharacterSet, in.PatientName)
		}
		if got := f.dataSetOf(t, o.inst); !bytes.Equal(got, data) {
			t.Error("the object was not stored as received")
		}
	})
}

// An object sent to a named study (STOW-RS to /studies/{study}) that
// belongs to another is refused before it is committed; one of that
// study is stored, and Stored names its study and series.
func TestExpectStudy(t *testing.T) {
	f := newFixture(t, "")
	o := ctObject(t, "1.2.826.0.1.3680043.10.1.6")
	study := o.ds.String(dicom.StudyInstanceUID)
	req := func(expect string) *archive.StoreRequest {
		return &archive.StoreRequest{SOPClassUID: ctImageStorage, SOPInstanceUID: o.inst, TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID,
			Data: bytes.NewReader(o.bytes(t)), ExpectStudy: expect}
	}
	_, err := f.ar.Store(context.Background(), req("1.2.3.4"))
	var ae *archive.Error
	if !errors.As(err, &ae) || ae.Kind != archive.ErrAttributeMismatch || ae.Tag != dicom.StudyInstanceUID {
		t.Fatalf("store to another study: %v", err)
	}
	if _, err := f.idx.Get(context.Background(), o.inst); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused instance indexed: %v", err)
	}
	st, err := f.ar.Store(context.Background(), req(study))
	if err != nil {
		t.Fatal(err)
	}
	if st.StudyInstanceUID != study || st.SeriesInstanceUID != o.ds.String(dicom.SeriesInstanceUID) {
		t.Errorf("Stored = %+v", st)
	}
	f.checkNothingStored(t, "", 1)
}
