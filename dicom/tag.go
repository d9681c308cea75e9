package dicom

import "fmt"

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

// VROf returns the dictionary VR of t: "UL" for group lengths (gggg,0000),
// "LO" for private creators, "UN" for other private and unknown tags. Where
// the standard allows several VRs the one used for encoding is returned
// ("OW" for Pixel Data; "US" for "US or SS"; see normaliseVR).
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
	if e := lookupElement(t); e != nil {
		return normaliseVR(e.vr)
	}
	return "UN"
}

// Keyword returns the dictionary keyword of t ("PatientName"), or "" when
// the tag is unknown; a tag of a repeating group yields its form's keyword
// ((6002,3000) is OverlayData). Group lengths the standard does not list
// yield "GenericGroupLength".
func Keyword(t Tag) string {
	if t.Group()%2 == 1 {
		return ""
	}
	if e := lookupElement(t); e != nil {
		return e.keyword
	}
	if t.Element() == 0 {
		return "GenericGroupLength"
	}
	return ""
}

// TagByKeyword looks a tag up by its dictionary keyword; the keyword of a
// repeating form yields its first group ("OverlayData" is (6000,3000)).
func TagByKeyword(kw string) (Tag, bool) {
	t, ok := dictByKeyword[kw]
	return t, ok
}
