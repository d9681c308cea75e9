package dicom

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileHeader(t *testing.T) {
	m := &FileMeta{
		MediaStorageSOPClassUID:      "1.2.840.10008.5.1.4.1.1.2",
		MediaStorageSOPInstanceUID:   "1.2.3.45",
		TransferSyntaxUID:            ExplicitVRLittleEndian.UID,
		SourceApplicationEntityTitle: "WARD",
	}
	var buf bytes.Buffer
	if err := WriteFileHeader(&buf, m); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if !bytes.Equal(b[:128], make([]byte, 128)) || string(b[128:132]) != "DICM" {
		t.Fatal("bad preamble")
	}
	gl := binary.LittleEndian.Uint32(b[140:144])
	if int(gl) != len(b)-144 {
		t.Fatalf("group length %d, want %d", gl, len(b)-144)
	}
	if len(b)%2 != 0 {
		t.Fatal("odd length")
	}
	got, br, err := ReadFileHeader(bytes.NewReader(b), 1024)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := br.Peek(1); len(n) != 0 {
		t.Fatal("data left after meta")
	}
	want := *m
	want.ImplementationClassUID = ImplementationClassUID
	want.ImplementationVersionName = ImplementationVersionName
	if *got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, _, err := ReadFileHeader(bytes.NewReader(b), 64); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("limit not enforced: %v", err)
	}
	bad := *m
	bad.TransferSyntaxUID = ""
	if err := WriteFileHeader(io.Discard, &bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty transfer syntax accepted: %v", err)
	}
	// dcmdump reads the header plus an empty data set.
	if _, err := os.Stat("/usr/bin/dcmdump"); err == nil {
		p := filepath.Join(t.TempDir(), "h.dcm")
		os.WriteFile(p, b, 0o644)
		if ok, out := dcmdumpClean(t, p); !ok {
			t.Fatalf("dcmdump: %s", out)
		}
	}
}

func TestReadFileHeaderVariants(t *testing.T) {
	testFiles(t)
	tests := []struct {
		file   string
		ts     string
		noMeta bool
		sop    string
	}{
		{"CT_small.dcm", ExplicitVRLittleEndian.UID, false, "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"},
		{"ExplVR_BigEndNoMeta.dcm", ExplicitVRBigEndian.UID, true, "1.2.333.4444.5.6.7.8"},
		{"ExplVR_LitEndNoMeta.dcm", ExplicitVRLittleEndian.UID, true, "1.2.333.4444.5.6.7.8"},
		{"rtstruct.dcm", ImplicitVRLittleEndian.UID, true, "1.2.826.0.1.3680043.8.498.2010020400001"},
		{"meta_missing_tsyntax.dcm", ImplicitVRLittleEndian.UID, false, ""},
		{"image_dfl.dcm", DeflatedExplicitVRLittleEndian.UID, false, "1.3.6.1.4.1.5962.1.1.0.0.0.977067309.6001.0"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			m, r, err := OpenFile(filepath.Join(pydicomData, "test_files", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if m.TransferSyntaxUID != tc.ts || m.NoMeta != tc.noMeta {
				t.Fatalf("got ts %s noMeta %v", m.TransferSyntaxUID, m.NoMeta)
			}
			if tc.sop != "" && m.MediaStorageSOPInstanceUID != tc.sop {
				t.Fatalf("sop %q", m.MediaStorageSOPInstanceUID)
			}
		})
	}
}

func TestReadFileHeaderErrors(t *testing.T) {
	var hdr bytes.Buffer
	WriteFileHeader(&hdr, &FileMeta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1.3", TransferSyntaxUID: "1.2.840.10008.1.2.1"})
	full := hdr.Bytes()
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrNotDICOM},
		{"truncated meta", full[:150], io.ErrUnexpectedEOF},
		{"garbage", bytes.Repeat([]byte{0xFF}, 200), ErrNotDICOM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadFileHeader(bytes.NewReader(tc.in), 1024)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestLookupTransferSyntax(t *testing.T) {
	tests := []struct {
		uid          string
		name         string
		encapsulated bool
		isNil        bool
	}{
		{"1.2.840.10008.1.2", "Implicit VR Little Endian", false, false},
		{"1.2.840.10008.1.2.1\x00", "Explicit VR Little Endian", false, false},
		{"1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", true, false},
		{"1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)", true, false},
		{"1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1", true, false},
		{"1.2.840.10008.1.2.5", "RLE Lossless", true, false},
		{"1.2.3.4.5", "", true, false},
		{"", "", false, true},
		{"1.02.3", "", false, true},
		{"abc", "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.uid, func(t *testing.T) {
			ts := LookupTransferSyntax(tc.uid)
			if tc.isNil {
				if ts != nil {
					t.Fatalf("got %+v", ts)
				}
				return
			}
			if ts == nil || ts.Name != tc.name || ts.Encapsulated != tc.encapsulated || !ts.Explicit && tc.uid != "1.2.840.10008.1.2" {
				t.Fatalf("got %+v", ts)
			}
		})
	}
	if !IsUncompressed(DeflatedExplicitVRLittleEndian) || IsUncompressed(LookupTransferSyntax("1.2.840.10008.1.2.4.50")) {
		t.Fatal("IsUncompressed")
	}
}

func TestDictionary(t *testing.T) {
	tests := []struct {
		tag Tag
		vr  string
		kw  string
	}{
		{PatientName, "PN", "PatientName"},
		{PixelData, "OW", "PixelData"},
		{NewTag(0x0028, 0x0000), "UL", ""},
		{NewTag(0x0009, 0x0010), "LO", ""},
		{NewTag(0x0009, 0x1010), "UN", ""},
		{NewTag(0x6002, 0x3000), "OW", ""},
		{NewTag(0x0008, 0x1115), "SQ", "ReferencedSeriesSequence"},
		{NewTag(0x0028, 0x3006), "OW", "LUTData"},
	}
	for _, tc := range tests {
		t.Run(tc.tag.String(), func(t *testing.T) {
			if got := VROf(tc.tag); got != tc.vr {
				t.Errorf("VROf = %q", got)
			}
			if tc.kw != "" {
				if got := Keyword(tc.tag); got != tc.kw {
					t.Errorf("Keyword = %q", got)
				}
				if got, ok := TagByKeyword(tc.kw); !ok || got != tc.tag {
					t.Errorf("TagByKeyword = %v", got)
				}
			}
		})
	}
	if PatientName.String() != "(0010,0010)" || NewTag(0x7FE0, 0x10) != PixelData || PixelData.Group() != 0x7FE0 || PixelData.Element() != 0x10 {
		t.Fatal("Tag methods")
	}
}

func TestStorageSOPClasses(t *testing.T) {
	yes := []string{"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.481.23", "1.2.840.10008.5.1.4.1.1.66.7", "1.2.840.10008.5.1.4.1.1.6.1\x00"}
	no := []string{"1.2.840.10008.1.20.1", "1.2.840.10008.1.3.10", "1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.2.1", ""}
	for _, u := range yes {
		if !IsStorageSOPClass(u) {
			t.Errorf("%q not storage", u)
		}
	}
	for _, u := range no {
		if IsStorageSOPClass(u) {
			t.Errorf("%q storage", u)
		}
	}
	all := StorageSOPClasses()
	if len(all) < 200 {
		t.Fatalf("only %d classes", len(all))
	}
	if UIDName("1.2.840.10008.5.1.4.1.1.2") != "CT Image Storage" || UIDName("1.2.840.10008.1.1") == "" || UIDName("9.9") != "" {
		t.Fatal("UIDName")
	}
	if !ValidUID(ImplementationClassUID) || len(ImplementationVersionName) > 16 {
		t.Fatal("implementation identity invalid")
	}
}

var _ = bufio.NewReader
