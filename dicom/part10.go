package dicom

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
)

// FileMeta is the File Meta Information of a DICOM file (PS3.10 7.1).
type FileMeta struct {
	MediaStorageSOPClassUID      string
	MediaStorageSOPInstanceUID   string
	TransferSyntaxUID            string
	ImplementationClassUID       string
	ImplementationVersionName    string
	SourceApplicationEntityTitle string
	// NoMeta is set by ReadFileHeader when the input had no File Meta
	// Information (a raw data set); the fields above were then guessed
	// from the data set.
	NoMeta bool
	// SOPClassUID and SOPInstanceUID are the data set's own (0008,0016)
	// and (0008,0018), peeked by ReadFileHeader from the start of a
	// non-deflated data set; empty when not found there. A sender names
	// the object by these: files whose meta disagrees with the data set
	// exist.
	SOPClassUID, SOPInstanceUID string
}

// DefaultMetaLimit bounds group 2 when OpenFile reads a file.
const DefaultMetaLimit = 64 << 10

// WriteFileHeader writes the 128-byte preamble, "DICM" and the File Meta
// Information group in explicit VR little endian with a correct group
// length. An empty ImplementationClassUID (with its version name) is
// replaced by Ward's. TransferSyntaxUID, MediaStorageSOPClassUID and
// MediaStorageSOPInstanceUID are required and must be valid UIDs.
func WriteFileHeader(w io.Writer, m *FileMeta) error {
	if m == nil {
		return fmt.Errorf("%w: nil file meta", ErrMalformed)
	}
	impl, ver := m.ImplementationClassUID, m.ImplementationVersionName
	if impl == "" {
		impl, ver = ImplementationClassUID, ImplementationVersionName
	}
	uids := []struct {
		name, v string
	}{
		{"media storage sop class uid", m.MediaStorageSOPClassUID},
		{"media storage sop instance uid", m.MediaStorageSOPInstanceUID},
		{"transfer syntax uid", m.TransferSyntaxUID},
		{"implementation class uid", impl},
	}
	for _, u := range uids {
		if !StorableUID(trimUID(u.v)) {
			return fmt.Errorf("%w: file meta: invalid %s %q", ErrMalformed, u.name, u.v)
		}
	}
	if len(ver) > 16 || len(m.SourceApplicationEntityTitle) > 16 {
		return fmt.Errorf("%w: file meta: implementation version name or source AE title longer than 16", ErrMalformed)
	}
	var body bytes.Buffer
	putMeta(&body, FileMetaInformationVersion, "OB", []byte{0x00, 0x01})
	putMeta(&body, MediaStorageSOPClassUID, "UI", padUID(m.MediaStorageSOPClassUID))
	putMeta(&body, MediaStorageSOPInstanceUID, "UI", padUID(m.MediaStorageSOPInstanceUID))
	putMeta(&body, TransferSyntaxUID, "UI", padUID(m.TransferSyntaxUID))
	putMeta(&body, ImplementationClassUIDTag, "UI", padUID(impl))
	if ver != "" {
		putMeta(&body, ImplementationVersionNameTag, "SH", padText(ver))
	}
	if ae := strings.TrimSpace(m.SourceApplicationEntityTitle); ae != "" {
		putMeta(&body, SourceApplicationEntityTitle, "AE", padText(ae))
	}
	out := make([]byte, 0, 132+12+body.Len())
	out = append(out, make([]byte, 128)...)
	out = append(out, "DICM"...)
	var gl [4]byte
	binary.LittleEndian.PutUint32(gl[:], uint32(body.Len()))
	out = appendHeader(out, coding{explicit: true}, FileMetaInformationGroupLength, vrUL, 4)
	out = append(out, gl[:]...)
	out = append(out, body.Bytes()...)
	_, err := w.Write(out)
	return err
}

func putMeta(b *bytes.Buffer, t Tag, v string, val []byte) {
	b.Write(appendHeader(nil, coding{explicit: true}, t, mkVR(v), uint32(len(val))))
	b.Write(val)
}

func padUID(s string) []byte {
	s = trimUID(s)
	b := []byte(s)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	return b
}

func padText(s string) []byte {
	b := []byte(s)
	if len(b)%2 == 1 {
		b = append(b, ' ')
	}
	return b
}

// appendHeader encodes an element header in coding c.
func appendHeader(dst []byte, c coding, t Tag, v vr, length uint32) []byte {
	dst = c.appendU16(dst, t.Group())
	dst = c.appendU16(dst, t.Element())
	if !c.explicit || t.Group() == 0xFFFE {
		return c.appendU32(dst, length)
	}
	dst = append(dst, byte(v>>8), byte(v))
	if longVR(v) {
		dst = append(dst, 0, 0)
		return c.appendU32(dst, length)
	}
	return c.appendU16(dst, uint16(length))
}

// ReadFileHeader reads the preamble, "DICM" prefix and File Meta group 2
// from r and returns the meta information and a buffered reader positioned
// at the first byte of the data set (still deflated for deflated syntaxes).
// Group 2 may not exceed limit bytes (ErrTooLarge).
//
// Input without preamble and meta (a raw data set, as some archives hold) is
// accepted: the transfer syntax is guessed from the first element (explicit
// or implicit VR, little or big endian), SOP Class and Instance UIDs are
// peeked from the start of the data set, and NoMeta is set. A meta group
// without (0002,0010) gets its transfer syntax guessed the same way.
func ReadFileHeader(r io.Reader, limit int64) (*FileMeta, *bufio.Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok || br.Size() < bufSize {
		br = bufio.NewReaderSize(r, bufSize)
	}
	m := &FileMeta{}
	b, perr := br.Peek(132)
	if perr != nil && perr != io.EOF && perr != bufio.ErrBufferFull {
		// A failing reader (a damaged or unauthenticated object) is not
		// an empty or short file.
		return nil, nil, fmt.Errorf("reading the file: %w", perr)
	}
	hasMeta := false
	switch {
	case len(b) >= 132 && string(b[128:132]) == "DICM":
		br.Discard(132)
		hasMeta = true
	case len(b) >= 4 && string(b[:4]) == "DICM":
		br.Discard(4)
		hasMeta = true
	case len(b) >= 8 && b[0] == 0x02 && b[1] == 0x00 && knownVRs[vr(b[4])<<8|vr(b[5])]:
		hasMeta = true
	}
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: empty input", ErrNotDICOM)
	}
	if hasMeta {
		if err := readMeta(br, m, limit); err != nil {
			return nil, nil, err
		}
	} else {
		m.NoMeta = true
	}
	if m.TransferSyntaxUID == "" {
		ts, err := guessSyntax(br)
		if err != nil {
			return nil, nil, err
		}
		m.TransferSyntaxUID = ts.UID
	} else if LookupTransferSyntax(m.TransferSyntaxUID) == nil {
		return nil, nil, fmt.Errorf("%w: invalid transfer syntax uid %q", ErrNoTransferSyntax, m.TransferSyntaxUID)
	}
	if ts := LookupTransferSyntax(m.TransferSyntaxUID); !ts.Deflated {
		cls, inst := peekSOP(br, codingOf(ts))
		m.SOPClassUID, m.SOPInstanceUID = cls, inst
		{
			if m.MediaStorageSOPClassUID == "" {
				m.MediaStorageSOPClassUID = cls
			}
			if m.MediaStorageSOPInstanceUID == "" {
				m.MediaStorageSOPInstanceUID = inst
			}
		}
	}
	return m, br, nil
}

func readMeta(br *bufio.Reader, m *FileMeta, limit int64) error {
	d := &decoder{r: br}
	c := coding{explicit: true}
	var h header
	for {
		b, err := br.Peek(2)
		if len(b) < 2 {
			if err == io.EOF && len(b) == 0 {
				return nil // meta only, empty data set
			}
			return d.ioErr(err, "file meta")
		}
		if binary.LittleEndian.Uint16(b) != 0x0002 {
			return nil
		}
		if err := d.readHeader(c, &h); err != nil {
			if err == io.EOF {
				return truncated("file meta", d.pos)
			}
			return fmt.Errorf("file meta: %w", err)
		}
		if h.length == undefinedLength {
			return malformed(d.pos, "file meta element %v of undefined length", h.tag)
		}
		if d.pos+int64(h.length) > limit {
			return fmt.Errorf("%w: file meta larger than %d bytes", ErrTooLarge, limit)
		}
		v, err := d.readValue(h.length, h.tag)
		if err != nil {
			return err
		}
		s := strings.TrimRight(string(v), "\x00 ")
		switch h.tag {
		case FileMetaInformationGroupLength:
			if len(v) == 4 && int64(binary.LittleEndian.Uint32(v)) > limit {
				return fmt.Errorf("%w: file meta group length %d exceeds %d", ErrTooLarge, binary.LittleEndian.Uint32(v), limit)
			}
		case MediaStorageSOPClassUID:
			m.MediaStorageSOPClassUID = s
		case MediaStorageSOPInstanceUID:
			m.MediaStorageSOPInstanceUID = s
		case TransferSyntaxUID:
			m.TransferSyntaxUID = s
		case ImplementationClassUIDTag:
			m.ImplementationClassUID = s
		case ImplementationVersionNameTag:
			m.ImplementationVersionName = strings.TrimSpace(s)
		case SourceApplicationEntityTitle:
			m.SourceApplicationEntityTitle = strings.TrimSpace(s)
		}
	}
}

// GuessTransferSyntax guesses the syntax of a raw data set from its first
// element header: explicit when bytes 4-5 are a known VR, big endian when
// the big-endian reading of the group is the smaller one.
func GuessTransferSyntax(first []byte) (*TransferSyntax, error) {
	if len(first) < 8 {
		return nil, fmt.Errorf("%w: data set too short to guess its transfer syntax", ErrNotDICOM)
	}
	explicit := knownVRs[vr(first[4])<<8|vr(first[5])]
	gLE := binary.LittleEndian.Uint16(first[0:2])
	gBE := binary.BigEndian.Uint16(first[0:2])
	if explicit && gBE < gLE {
		return ExplicitVRBigEndian, nil
	}
	if explicit {
		return ExplicitVRLittleEndian, nil
	}
	if gLE > 0x7FE0 && gLE != 0xFFFC {
		return nil, fmt.Errorf("%w: first element group %04X", ErrNotDICOM, gLE)
	}
	return ImplicitVRLittleEndian, nil
}

func guessSyntax(br *bufio.Reader) (*TransferSyntax, error) {
	b, _ := br.Peek(8)
	if len(b) == 0 {
		return ExplicitVRLittleEndian, nil // empty data set
	}
	return GuessTransferSyntax(b)
}

// peekSOP reads SOP Class/Instance UID from the buffered start of the data
// set without consuming it.
func peekSOP(br *bufio.Reader, c coding) (cls, inst string) {
	b, _ := br.Peek(br.Size())
	d := &decoder{r: bufio.NewReaderSize(bytes.NewReader(b), 16)}
	var h header
	for {
		if err := d.readHeader(c, &h); err != nil {
			return
		}
		if h.tag > SOPInstanceUID {
			return
		}
		if (h.tag == SOPClassUID || h.tag == SOPInstanceUID) && h.length <= 128 {
			v, err := d.readValue(h.length, h.tag)
			if err != nil {
				return
			}
			if h.tag == SOPClassUID {
				cls = trimUID(string(v))
			} else {
				inst = trimUID(string(v))
			}
			continue
		}
		if err := d.skipElement(c, &h, 0); err != nil {
			return
		}
	}
}

type fileReader struct {
	*bufio.Reader
	f *os.File
}

func (f fileReader) Close() error { return f.f.Close() }

// OpenFile opens a Part 10 file (or raw data set) and returns its meta
// information and a reader positioned at the data set, which the caller
// must close.
func OpenFile(path string) (*FileMeta, io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	m, br, err := ReadFileHeader(f, DefaultMetaLimit)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, fileReader{br, f}, nil
}
