package dicom

import "testing"

// TestDictionaryEntries checks the generated dictionary against entries of PS3.6
// 2024b read by hand, and that the VR rule for multi-VR entries is the one
// the encoder has always used (OW where OW is allowed, else the first).
func TestDictionaryEntries(t *testing.T) {
	if DictionaryEdition != "2024b" {
		t.Errorf("edition %q", DictionaryEdition)
	}
	for _, c := range []struct {
		tag     Tag
		vr, kw  string
		retired bool
	}{
		{0x00080018, "UI", "SOPInstanceUID", false},
		{0x00100010, "PN", "PatientName", false},
		{0x00020010, "UI", "TransferSyntaxUID", false},                                       // Table 7-1
		{0x00041220, "SQ", "DirectoryRecordSequence", false},                                 // Table 8-1
		{0x00041200, "UL", "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity", false}, // UP before 2020
		{0x00000100, "US", "CommandField", false},                                            // PS3.7 E.1-1
		{0x00000600, "AE", "MoveDestination", false},                                         // PS3.7 E.1-1
		{0x00004000, "LT", "DialogReceiver", true},                                           // PS3.7 E.2-1
		{0x00080001, "UL", "LengthToEnd", true},                                              // retired, keyword without prefix
		{0x00080017, "UI", "AcquisitionUID", false},                                          // newer than the old library
		{0x00181204, "DA", "DateOfManufacture", false},                                       // was UN
		{0x0072006B, "TM", "SelectorTMValue", false},                                         // was UN
		{0x7FE00010, "OW", "PixelData", false},                                               // OB or OW
		{0x7FE00008, "OF", "FloatPixelData", false},
		{0x00283002, "US", "LUTDescriptor", false},           // US or SS
		{0x00283006, "OW", "LUTData", false},                 // US or OW
		{0x00281200, "OW", "GrayLookupTableData", true},      // US or SS or OW
		{0x00280106, "US", "SmallestImagePixelValue", false}, // US or SS
		{0x60003000, "OW", "OverlayData", false},             // (60xx,3000), OB or OW
		{0x60023000, "OW", "OverlayData", false},
		{0x601E0010, "US", "OverlayRows", false},
		{0x60020050, "SS", "OverlayOrigin", false},
		{0x50020010, "US", "NumberOfPoints", true},    // (50xx,0010), retired curves
		{0x7F020010, "OW", "VariablePixelData", true}, // (7Fxx,0010)
		{0x002031A4, "CS", "SourceImageIDs", true},    // (0020,31xx)
		{0x00280412, "LO", "CoefficientCoding", true}, // (0028,04x2)
		{0x10000015, "US", "ShiftTableTriplet", true}, // (1000,xxx5)
		{0x1010ABCD, "US", "ZonalMap", true},          // (1010,xxxx)
	} {
		if got := VROf(c.tag); got != c.vr {
			t.Errorf("VROf(%v) = %q, want %q", c.tag, got, c.vr)
		}
		if got := Keyword(c.tag); got != c.kw {
			t.Errorf("Keyword(%v) = %q, want %q", c.tag, got, c.kw)
		}
		if e := lookupElement(c.tag); e == nil || e.retired != c.retired {
			t.Errorf("%v: entry %+v, want retired %v", c.tag, e, c.retired)
		}
		if tag, ok := TagByKeyword(c.kw); !ok || tag != c.tag&^Tag(lookupElement(c.tag).xmask) {
			t.Errorf("TagByKeyword(%q) = %v, %v", c.kw, tag, ok)
		}
	}
	// Outside the repeating ranges, and private and unknown tags.
	for _, c := range []struct {
		tag    Tag
		vr, kw string
	}{
		{0x60203000, "UN", ""},                   // 60xx repeats in 6000-601E only
		{0x60013000, "UN", ""},                   // odd: private
		{0x60110010, "LO", ""},                   // private creator
		{0x00080000, "UL", "GenericGroupLength"}, // group length the standard does not list
		{0x10000000, "UL", "GenericGroupLength"}, // not (1000,xxx0)
		{0x00020000, "UL", "FileMetaInformationGroupLength"},
		{0x0018F000, "UN", ""},
		{0xFFFEE000, "", "Item"}, // "See Note 2": no VR
	} {
		if got := VROf(c.tag); got != c.vr {
			t.Errorf("VROf(%v) = %q, want %q", c.tag, got, c.vr)
		}
		if got := Keyword(c.tag); got != c.kw {
			t.Errorf("Keyword(%v) = %q, want %q", c.tag, got, c.kw)
		}
	}
	if _, ok := TagByKeyword("RETIRED_LengthToEnd"); ok {
		t.Error("a keyword the standard does not have resolves")
	}
	if _, ok := TagByKeyword(""); ok {
		t.Error("the empty keyword resolves")
	}
	for uid, name := range map[string]string{
		"1.2.840.10008.1.1":             "Verification SOP Class",
		"1.2.840.10008.5.1.4.1.2.2.1":   "Study Root Query/Retrieve Information Model - FIND",
		"1.2.840.10008.5.1.1.27":        "Stored Print Storage SOP Class",           // retired: suffix dropped
		"1.2.840.10008.1.4.1.1":         "Talairach Brain Atlas Frame of Reference", // Table A-2
		"1.2.840.10008.1.2.4.201":       "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
		"1.2.840.10008.5.1.4.1.1.201.2": "Inventory - FIND",
		"1.2.840.10008.5.1.4.1.1.2\x00": "CT Image Storage",
		"1.2.3.4":                       "",
	} {
		if got := UIDName(uid); got != name {
			t.Errorf("UIDName(%q) = %q, want %q", uid, got, name)
		}
	}
}

// TestDictionaryWellFormed: every entry has a usable VR unless the standard
// gives none, keywords are unique, and no two entries share a tag.
func TestDictionaryWellFormed(t *testing.T) {
	seen := map[string]Tag{}
	for i, e := range dictElements {
		if i > 0 && dictElements[i-1].tag == e.tag && dictElements[i-1].xmask == e.xmask {
			t.Errorf("%v twice", e.tag)
		}
		if normaliseVR(e.vr) == "UN" && e.vr != "" && e.vr[0] != 'S' && e.vr != "UN" {
			t.Errorf("%v: VR %q gives UN", e.tag, e.vr)
		}
		if e.keyword == "" {
			if !e.retired {
				t.Errorf("%v: no keyword but not retired", e.tag)
			}
			continue
		}
		if prev, dup := seen[e.keyword]; dup {
			t.Errorf("keyword %s for %v and %v", e.keyword, prev, e.tag)
		}
		seen[e.keyword] = e.tag
	}
	if len(dictElements) < 5000 || len(dictUIDs) < 450 {
		t.Errorf("%d elements, %d UIDs", len(dictElements), len(dictUIDs))
	}
}

// BenchmarkVROf is the per-element look-up of the decoder (no allocation).
func BenchmarkVROf(b *testing.B) {
	tags := []Tag{PatientName, PixelData, 0x60023000, 0x0018F000}
	for i := 0; i < b.N; i++ {
		_ = VROf(tags[i%len(tags)])
	}
}

// TestVRChoicesKept: the VRs that tag.go once set by hand over the old
// library's dictionary (multi-VR entries, overlays, attributes it lacked)
// are what the generated dictionary gives.
func TestVRChoicesKept(t *testing.T) {
	for tag, vr := range map[Tag]string{
		0x00283006: "OW", 0x00283002: "US", 0x00281101: "US", 0x00281102: "US", 0x00281103: "US",
		0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD",
		0x60000010: "US", 0x60000011: "US", 0x60000015: "IS", 0x60000022: "LO", 0x60000040: "CS",
		0x60000045: "LO", 0x60000050: "SS", 0x60000051: "US", 0x60000100: "US", 0x60000102: "US",
		0x60001001: "CS", 0x60001301: "IS", 0x60001302: "DS", 0x60001303: "DS", 0x60001500: "LO",
		0x60003000: "OW", 0x0040A160: "UT", 0x00080120: "UR", 0x00080119: "UC", 0x00181030: "LO",
	} {
		for _, g := range []Tag{0, 0x00020000, 0x001E0000} { // the repeating groups too
			if tag>>24 != 0x60 && g != 0 {
				continue
			}
			if got := VROf(tag + g); got != vr {
				t.Errorf("VROf(%v) = %q, want %q", tag+g, got, vr)
			}
		}
	}
}
