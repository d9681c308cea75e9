package dicom

import (
	"fmt"
	"strings"
	"sync"

	dtag "github.com/suyashkumar/dicom/pkg/tag"
)

// Tag is a DICOM attribute tag: group<<16 | element.
type Tag uint32

// NewTag returns the tag (group,element).
func NewTag(group, element uint16) Tag { return Tag(group)<<16 | Tag(element) }

// Group returns the group number.
func (t Tag) Group() uint16 { return uint16(t >> 16) }

// Element returns the element number.
func (t Tag) Element() uint16 { return uint16(t) }

// String formats the tag as "(gggg,eeee)" with upper-case hex digits.
func (t Tag) String() string { return fmt.Sprintf("(%04X,%04X)", t.Group(), t.Element()) }

// IsPrivate reports whether the tag is in a private (odd) group.
func (t Tag) IsPrivate() bool {
	g := t.Group()
	return g%2 == 1 && g > 0x0008 && g != 0xFFFF
}

// IsPrivateCreator reports whether t is a private creator element
// (gggg,0010-00FF) in a private group.
func (t Tag) IsPrivateCreator() bool {
	e := t.Element()
	return t.IsPrivate() && e >= 0x0010 && e <= 0x00FF
}

// Well-known tags (PS3.6 Table 6-1 and 7-1).
//
// The File Meta tags (0002,0012) and (0002,0013) carry a Tag suffix because
// ImplementationClassUID and ImplementationVersionName name Ward's own values
// (version.go).
const (
	FileMetaInformationGroupLength  Tag = 0x00020000
	FileMetaInformationVersion      Tag = 0x00020001
	MediaStorageSOPClassUID         Tag = 0x00020002
	MediaStorageSOPInstanceUID      Tag = 0x00020003
	TransferSyntaxUID               Tag = 0x00020010
	ImplementationClassUIDTag       Tag = 0x00020012
	ImplementationVersionNameTag    Tag = 0x00020013
	SourceApplicationEntityTitle    Tag = 0x00020016
	SendingApplicationEntityTitle   Tag = 0x00020017
	ReceivingApplicationEntityTitle Tag = 0x00020018
	PrivateInformationCreatorUID    Tag = 0x00020100
	PrivateInformation              Tag = 0x00020102

	SpecificCharacterSet     Tag = 0x00080005
	ImageType                Tag = 0x00080008
	InstanceCreationDate     Tag = 0x00080012
	InstanceCreationTime     Tag = 0x00080013
	SOPClassUID              Tag = 0x00080016
	SOPInstanceUID           Tag = 0x00080018
	StudyDate                Tag = 0x00080020
	SeriesDate               Tag = 0x00080021
	AcquisitionDate          Tag = 0x00080022
	ContentDate              Tag = 0x00080023
	StudyTime                Tag = 0x00080030
	SeriesTime               Tag = 0x00080031
	AcquisitionTime          Tag = 0x00080032
	ContentTime              Tag = 0x00080033
	AccessionNumber          Tag = 0x00080050
	QueryRetrieveLevel       Tag = 0x00080052
	RetrieveAETitle          Tag = 0x00080054
	InstanceAvailability     Tag = 0x00080056
	Modality                 Tag = 0x00080060
	ModalitiesInStudy        Tag = 0x00080061
	SOPClassesInStudy        Tag = 0x00080062
	ConversionType           Tag = 0x00080064
	Manufacturer             Tag = 0x00080070
	InstitutionName          Tag = 0x00080080
	ReferringPhysicianName   Tag = 0x00080090
	TimezoneOffsetFromUTC    Tag = 0x00080201
	StationName              Tag = 0x00081010
	StudyDescription         Tag = 0x00081030
	SeriesDescription        Tag = 0x0008103E
	ManufacturerModelName    Tag = 0x00081090
	ReferencedSOPClassUID    Tag = 0x00081150
	ReferencedSOPInstanceUID Tag = 0x00081155

	PatientName                     Tag = 0x00100010
	PatientID                       Tag = 0x00100020
	IssuerOfPatientID               Tag = 0x00100021
	PatientBirthDate                Tag = 0x00100030
	PatientBirthTime                Tag = 0x00100032
	PatientSex                      Tag = 0x00100040
	OtherPatientIDs                 Tag = 0x00101000
	PatientAge                      Tag = 0x00101010
	NumberOfPatientRelatedStudies   Tag = 0x00201200
	NumberOfPatientRelatedSeries    Tag = 0x00201202
	NumberOfPatientRelatedInstances Tag = 0x00201204

	BodyPartExamined Tag = 0x00180015

	StudyInstanceUID               Tag = 0x0020000D
	SeriesInstanceUID              Tag = 0x0020000E
	StudyID                        Tag = 0x00200010
	SeriesNumber                   Tag = 0x00200011
	AcquisitionNumber              Tag = 0x00200012
	InstanceNumber                 Tag = 0x00200013
	FrameOfReferenceUID            Tag = 0x00200052
	NumberOfStudyRelatedSeries     Tag = 0x00201206
	NumberOfStudyRelatedInstances  Tag = 0x00201208
	NumberOfSeriesRelatedInstances Tag = 0x00201209

	SamplesPerPixel           Tag = 0x00280002
	PhotometricInterpretation Tag = 0x00280004
	NumberOfFrames            Tag = 0x00280008
	Rows                      Tag = 0x00280010
	Columns                   Tag = 0x00280011
	BitsAllocated             Tag = 0x00280100
	BitsStored                Tag = 0x00280101
	HighBit                   Tag = 0x00280102
	PixelRepresentation       Tag = 0x00280103

	PerformedProcedureStepStartDate Tag = 0x00400244
	PerformedProcedureStepStartTime Tag = 0x00400245

	PixelData Tag = 0x7FE00010

	Item                     Tag = 0xFFFEE000
	ItemDelimitationItem     Tag = 0xFFFEE00D
	SequenceDelimitationItem Tag = 0xFFFEE0DD
)

// supplementVR covers tags the dictionary lacks or gives a VR unsuitable for
// encoding ("US or OW" style entries), keyed by tag; repeating groups (50xx,
// 60xx) are looked up with the group masked to 5000/6000.
var supplementVR = map[Tag]string{
	0x00283006: "OW", // LUT Data: US or OW
	0x00283002: "US", // LUT Descriptor: US or SS
	0x00281101: "US", // palette descriptors: US or SS
	0x00281102: "US",
	0x00281103: "US",
	0x7FE00010: "OW", // Pixel Data: OB or OW, chosen per BitsAllocated by Transcode
	0x7FE00008: "OF", // Float Pixel Data
	0x7FE00009: "OD", // Double Float Pixel Data
	0x60000010: "US", // Overlay Rows
	0x60000011: "US", // Overlay Columns
	0x60000015: "IS", // Number of Frames in Overlay
	0x60000022: "LO", // Overlay Description
	0x60000040: "CS", // Overlay Type
	0x60000045: "LO", // Overlay Subtype
	0x60000050: "SS", // Overlay Origin
	0x60000051: "US", // Image Frame Origin
	0x60000100: "US", // Overlay Bits Allocated
	0x60000102: "US", // Overlay Bit Position
	0x60001001: "CS", // Overlay Activation Layer
	0x60001301: "IS", // ROI Area
	0x60001302: "DS", // ROI Mean
	0x60001303: "DS", // ROI Standard Deviation
	0x60001500: "LO", // Overlay Label
	0x60003000: "OW", // Overlay Data: OB or OW
	0x0040A160: "UT", // Text Value
	0x00080120: "UR", // Code Value URN
	0x00080119: "UC", // Long Code Value
	0x00181030: "LO", // Protocol Name
}

// vrCache memoises dictionary look-ups (hits and misses) so that the
// per-element path does not allocate; bounded by maxVRCache entries.
var vrCache = struct {
	sync.RWMutex
	m map[Tag]string
}{m: make(map[Tag]string)}

const maxVRCache = 1 << 16

func cacheVR(t Tag, vr string) {
	vrCache.Lock()
	if len(vrCache.m) < maxVRCache {
		vrCache.m[t] = vr
	}
	vrCache.Unlock()
}

// VROf returns the dictionary VR of t: "UL" for group lengths (gggg,0000),
// "LO" for private creators, "UN" for other private and unknown tags. Where
// the standard allows several VRs the one used for encoding is returned
// ("OW" for Pixel Data; "US" for "US or SS").
func VROf(t Tag) string {
	if t.Element() == 0 {
		return "UL"
	}
	if t.Group() == 0xFFFE {
		return ""
	}
	if t.Group()%2 == 1 {
		if t.IsPrivateCreator() {
			return "LO"
		}
		return "UN"
	}
	vrCache.RLock()
	v, ok := vrCache.m[t]
	vrCache.RUnlock()
	if ok {
		return v
	}
	key := t
	if g := t.Group(); (g >= 0x5000 && g <= 0x501E) || (g >= 0x6000 && g <= 0x601E) {
		key = NewTag(g&0xFF00, t.Element())
	}
	if vr, ok := supplementVR[key]; ok {
		cacheVR(t, vr)
		return vr
	}
	info, err := dtag.Find(dtag.Tag{Group: key.Group(), Element: key.Element()})
	if err != nil {
		cacheVR(t, "UN")
		return "UN"
	}
	vr := normaliseVR(info.VR)
	cacheVR(t, vr)
	return vr
}

// normaliseVR turns dictionary forms like "US or SS" or "OB/OW" into one VR.
func normaliseVR(vr string) string {
	if len(vr) == 2 {
		return vr
	}
	f := strings.FieldsFunc(vr, func(r rune) bool { return r == ' ' || r == '/' || r == ',' })
	for _, p := range f {
		if p == "OW" {
			return "OW"
		}
	}
	for _, p := range f {
		if len(p) == 2 && p != "or" {
			return p
		}
	}
	return "UN"
}

// Keyword returns the dictionary keyword of t ("PatientName"), or "" when
// the tag is unknown. Group lengths yield "GenericGroupLength" except
// (0002,0000).
func Keyword(t Tag) string {
	if t.Group()%2 == 1 {
		return ""
	}
	info, err := dtag.Find(dtag.Tag{Group: t.Group(), Element: t.Element()})
	if err != nil {
		return ""
	}
	return info.Name
}

var kwCache sync.Map // keyword -> Tag

// TagByKeyword looks a tag up by its dictionary keyword.
func TagByKeyword(kw string) (Tag, bool) {
	if kw == "" {
		return 0, false
	}
	if v, ok := kwCache.Load(kw); ok {
		return v.(Tag), true
	}
	info, err := dtag.FindByName(kw)
	if err != nil {
		return 0, false
	}
	t := NewTag(info.Tag.Group, info.Tag.Element)
	kwCache.Store(kw, t)
	return t, true
}
