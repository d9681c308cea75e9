package dicom

import "fmt"

// PixelEncodingError is Pixel Data (7FE0,0010) encoded in a way its
// transfer syntax forbids (PS3.5 A.4): encapsulated (undefined length)
// under a native syntax, or native (defined length) under an encapsulated
// one. The rule holds wherever Pixel Data is, the top level or a sequence
// item (an icon). errors.Is matches ErrPixelEncoding and ErrMalformed.
type PixelEncodingError struct {
	// Syntax is the transfer syntax's name.
	Syntax string
	// Encapsulated: the pixel data is encapsulated (the syntax is native).
	Encapsulated bool
	// Nested: in a sequence item, not the top-level data set.
	Nested bool
	// Offset of the element's value in the data set.
	Offset int64
}

// Detail says what is wrong, for a person: its first 64 characters (what
// a DIMSE Error Comment keeps) say it without the syntax's name.
func (e *PixelEncodingError) Detail() string {
	var what string
	switch {
	case e.Encapsulated && e.Nested:
		what = "Pixel Data in an item: encapsulated, transfer syntax native"
	case e.Encapsulated:
		what = "Pixel Data: encapsulated, but the transfer syntax is native"
	case e.Nested:
		what = "Pixel Data in an item: native, transfer syntax encapsulated"
	default:
		what = "Pixel Data: native, but the transfer syntax is encapsulated"
	}
	return fmt.Sprintf("%s (%s; PS3.5 A.4)", what, e.Syntax)
}

func (e *PixelEncodingError) Error() string {
	return fmt.Sprintf("%v: offset %d: %s", ErrPixelEncoding, e.Offset, e.Detail())
}

// Is makes errors.Is match ErrPixelEncoding and ErrMalformed.
func (e *PixelEncodingError) Is(target error) bool {
	return target == ErrPixelEncoding || target == ErrMalformed
}

// checkPixel checks the length form of a Pixel Data element against the
// transfer syntax d.ts (nothing when unset, or when the syntax is one Ward
// does not know, whose form it cannot tell). Any other element with an
// undefined length in explicit VR must be a sequence (SQ, or UN holding
// one): PS3.5 7.1.2 allows an undefined length nowhere else.
func (d *decoder) checkPixel(c coding, h *header, nested bool) error {
	if d.ts == nil || d.ts.Name == "" {
		return nil
	}
	undefined := h.length == undefinedLength
	if h.tag != PixelData {
		if undefined && c.explicit && h.vr != vrSQ && h.vr != vrUN {
			return malformed(d.pos, "%v has VR %s and an undefined length, which only sequences and encapsulated pixel data may have", h.tag, h.vr)
		}
		return nil
	}
	if isSequence(c, h) {
		return nil // UN of undefined length: read as a sequence
	}
	if undefined != d.ts.Encapsulated {
		return &PixelEncodingError{Syntax: d.ts.Name, Encapsulated: undefined, Nested: nested, Offset: d.pos}
	}
	return nil
}
