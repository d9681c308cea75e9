package dicom

import "strings"

// TransferSyntax describes how a data set is encoded (PS3.5 Section 10).
type TransferSyntax struct {
	UID  string
	Name string // "" for a syntactically valid UID Ward does not know
	// Explicit VR; false only for Implicit VR Little Endian.
	Explicit bool
	// BigEndian: only Explicit VR Big Endian (retired).
	BigEndian bool
	// Deflated: the whole data set is a raw deflate stream (RFC 1951).
	Deflated bool
	// Encapsulated: pixel data, if any, is encapsulated in fragments.
	Encapsulated bool
	// Retired in the current standard.
	Retired bool
}

// The native (uncompressed) transfer syntaxes.
var (
	ImplicitVRLittleEndian         = &TransferSyntax{UID: "1.2.840.10008.1.2", Name: "Implicit VR Little Endian"}
	ExplicitVRLittleEndian         = &TransferSyntax{UID: "1.2.840.10008.1.2.1", Name: "Explicit VR Little Endian", Explicit: true}
	ExplicitVRBigEndian            = &TransferSyntax{UID: "1.2.840.10008.1.2.2", Name: "Explicit VR Big Endian", Explicit: true, BigEndian: true, Retired: true}
	DeflatedExplicitVRLittleEndian = &TransferSyntax{UID: "1.2.840.10008.1.2.1.99", Name: "Deflated Explicit VR Little Endian", Explicit: true, Deflated: true}
)

func encapsulated(uid, name string, retired bool) *TransferSyntax {
	return &TransferSyntax{UID: uid, Name: name, Explicit: true, Encapsulated: true, Retired: retired}
}

// transferSyntaxes lists PS3.6 Table A-1 transfer syntaxes (2024 editions).
var transferSyntaxes = []*TransferSyntax{
	ImplicitVRLittleEndian,
	ExplicitVRLittleEndian,
	ExplicitVRBigEndian,
	DeflatedExplicitVRLittleEndian,
	encapsulated("1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian", false),
	encapsulated("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", false),
	encapsulated("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)", false),
	encapsulated("1.2.840.10008.1.2.4.52", "JPEG Extended (Process 3 & 5)", true),
	encapsulated("1.2.840.10008.1.2.4.53", "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8)", true),
	encapsulated("1.2.840.10008.1.2.4.54", "JPEG Spectral Selection, Non-Hierarchical (Process 7 & 9)", true),
	encapsulated("1.2.840.10008.1.2.4.55", "JPEG Full Progression, Non-Hierarchical (Process 10 & 12)", true),
	encapsulated("1.2.840.10008.1.2.4.56", "JPEG Full Progression, Non-Hierarchical (Process 11 & 13)", true),
	encapsulated("1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)", false),
	encapsulated("1.2.840.10008.1.2.4.58", "JPEG Lossless, Non-Hierarchical (Process 15)", true),
	encapsulated("1.2.840.10008.1.2.4.59", "JPEG Extended, Hierarchical (Process 16 & 18)", true),
	encapsulated("1.2.840.10008.1.2.4.60", "JPEG Extended, Hierarchical (Process 17 & 19)", true),
	encapsulated("1.2.840.10008.1.2.4.61", "JPEG Spectral Selection, Hierarchical (Process 20 & 22)", true),
	encapsulated("1.2.840.10008.1.2.4.62", "JPEG Spectral Selection, Hierarchical (Process 21 & 23)", true),
	encapsulated("1.2.840.10008.1.2.4.63", "JPEG Full Progression, Hierarchical (Process 24 & 26)", true),
	encapsulated("1.2.840.10008.1.2.4.64", "JPEG Full Progression, Hierarchical (Process 25 & 27)", true),
	encapsulated("1.2.840.10008.1.2.4.65", "JPEG Lossless, Hierarchical (Process 28)", true),
	encapsulated("1.2.840.10008.1.2.4.66", "JPEG Lossless, Hierarchical (Process 29)", true),
	encapsulated("1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", false),
	encapsulated("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression", false),
	encapsulated("1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression", false),
	encapsulated("1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)", false),
	encapsulated("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression", false),
	encapsulated("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)", false),
	encapsulated("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component Image Compression", false),
	// JPIP: pixel data is referenced by URL, not present in the data set.
	{UID: "1.2.840.10008.1.2.4.94", Name: "JPIP Referenced", Explicit: true},
	{UID: "1.2.840.10008.1.2.4.95", Name: "JPIP Referenced Deflate", Explicit: true, Deflated: true},
	encapsulated("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level", false),
	encapsulated("1.2.840.10008.1.2.4.100.1", "Fragmentable MPEG2 Main Profile / Main Level", false),
	encapsulated("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level", false),
	encapsulated("1.2.840.10008.1.2.4.101.1", "Fragmentable MPEG2 Main Profile / High Level", false),
	encapsulated("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1", false),
	encapsulated("1.2.840.10008.1.2.4.102.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1", false),
	encapsulated("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", false),
	encapsulated("1.2.840.10008.1.2.4.103.1", "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", false),
	encapsulated("1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", false),
	encapsulated("1.2.840.10008.1.2.4.104.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", false),
	encapsulated("1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", false),
	encapsulated("1.2.840.10008.1.2.4.105.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", false),
	encapsulated("1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", false),
	encapsulated("1.2.840.10008.1.2.4.106.1", "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", false),
	encapsulated("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1", false),
	encapsulated("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1", false),
	encapsulated("1.2.840.10008.1.2.4.110", "JPEG XL Lossless", false),
	encapsulated("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression", false),
	encapsulated("1.2.840.10008.1.2.4.112", "JPEG XL", false),
	encapsulated("1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)", false),
	encapsulated("1.2.840.10008.1.2.4.202", "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)", false),
	encapsulated("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression", false),
	{UID: "1.2.840.10008.1.2.4.204", Name: "JPIP HTJ2K Referenced", Explicit: true},
	{UID: "1.2.840.10008.1.2.4.205", Name: "JPIP HTJ2K Referenced Deflate", Explicit: true, Deflated: true},
	encapsulated("1.2.840.10008.1.2.5", "RLE Lossless", false),
	// SMPTE ST 2110: essence carried outside the data set.
	{UID: "1.2.840.10008.1.2.7.1", Name: "SMPTE ST 2110-20 Uncompressed Progressive Active Video", Explicit: true},
	{UID: "1.2.840.10008.1.2.7.2", Name: "SMPTE ST 2110-20 Uncompressed Interlaced Active Video", Explicit: true},
	{UID: "1.2.840.10008.1.2.7.3", Name: "SMPTE ST 2110-30 PCM Digital Audio", Explicit: true},
	encapsulated("1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression", false),
}

var tsByUID = func() map[string]*TransferSyntax {
	m := make(map[string]*TransferSyntax, len(transferSyntaxes))
	for _, ts := range transferSyntaxes {
		m[ts.UID] = ts
	}
	return m
}()

// LookupTransferSyntax returns the transfer syntax for uid (trailing NUL and
// space padding ignored). A syntactically valid UID Ward does not know yields
// an explicit VR little endian, encapsulated entry with Name "" so the object
// can be stored and forwarded as received; an empty or invalid UID yields nil.
func LookupTransferSyntax(uid string) *TransferSyntax {
	uid = trimUID(uid)
	if ts, ok := tsByUID[uid]; ok {
		return ts
	}
	if !ValidUID(uid) {
		return nil
	}
	return &TransferSyntax{UID: uid, Explicit: true, Encapsulated: true}
}

// TransferSyntaxes returns the known transfer syntaxes.
func TransferSyntaxes() []*TransferSyntax {
	return append([]*TransferSyntax(nil), transferSyntaxes...)
}

// IsUncompressed reports whether ts is one of the four native syntaxes
// (implicit LE, explicit LE, explicit BE, deflated explicit LE).
func IsUncompressed(ts *TransferSyntax) bool {
	if ts == nil {
		return false
	}
	switch ts.UID {
	case ImplicitVRLittleEndian.UID, ExplicitVRLittleEndian.UID, ExplicitVRBigEndian.UID, DeflatedExplicitVRLittleEndian.UID:
		return true
	}
	return false
}

func trimUID(s string) string {
	return strings.TrimRight(s, "\x00 ")
}
