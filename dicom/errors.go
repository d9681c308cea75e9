package dicom

import "errors"

// Sentinel errors. Every error returned by this package wraps one of these
// (or io.ErrUnexpectedEOF for truncated input, which is reported together
// with ErrMalformed) so that callers can map them to DIMSE statuses with
// errors.Is.
var (
	// ErrMalformed reports input that violates the encoding rules of PS3.5.
	ErrMalformed = errors.New("dicom: malformed data")
	// ErrTooLarge reports a value or data set larger than the caller's limit.
	ErrTooLarge = errors.New("dicom: value exceeds limit")
	// ErrTooDeep reports sequences nested deeper than MaxDepth.
	ErrTooDeep = errors.New("dicom: sequences nested too deeply")
	// ErrNotConvertible reports a transfer syntax Transcode cannot convert
	// (encapsulated pixel data, unknown syntaxes).
	ErrNotConvertible = errors.New("dicom: transfer syntax not convertible")
	// ErrNoTransferSyntax reports a missing, empty or invalid transfer syntax.
	ErrNoTransferSyntax = errors.New("dicom: no usable transfer syntax")
	// ErrNotDICOM reports input that is neither a Part 10 file nor a
	// recognisable raw data set.
	ErrNotDICOM = errors.New("dicom: not a DICOM file")
	// ErrPixelEncoding reports Pixel Data whose length form contradicts
	// the transfer syntax (PS3.5 A.4); a *PixelEncodingError says how. It
	// is reported together with ErrMalformed.
	ErrPixelEncoding = errors.New("dicom: pixel data contradicts the transfer syntax")
)

// MaxDepth bounds the nesting of sequences (a sequence inside an item of a
// sequence counts as depth 2). Real objects rarely exceed 6.
const MaxDepth = 32
