package deid

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ward-pacs/ward/dicom"
)

// NewSecret returns a fresh secret as ReadSecret reads it: MinSecret
// random bytes, hex-encoded, with a newline.
func NewSecret() (string, error) {
	b := make([]byte, MinSecret)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b) + "\n", nil
}

// ReadSecret reads a secret NewSecret made from a file that must be a
// regular file closed to group and others.
func ReadSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the de-identification secret: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("the de-identification secret %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the de-identification secret %s has mode %#o: other users could read it; chmod 600 it", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) < MinSecret {
		return nil, fmt.Errorf("the de-identification secret %s is not %d or more hex-encoded bytes (ward deid secret makes one)", path, MinSecret)
	}
	return raw, nil
}

// ErrBurnedIn refuses an object that may show identity in its pixels:
// Burned In Annotation (0028,0301) or Recognizable Visual Features
// (0028,0302) is YES, or Burned In Annotation is absent and the modality or
// SOP class is one that often burns text in (RiskyModalities). Set
// Config.AcceptBurnedIn to export such objects anyway.
var ErrBurnedIn = errors.New("deid: the pixels may show patient identity (burned-in annotation)")

// MinSecret is the least secret length Transform accepts.
const MinSecret = 32

// MaxDateShift is the largest date shift, in days: dates move back by a
// whole number of days from 1 to MaxDateShift.
const MaxDateShift = 3650

// RiskyModalities are the modalities whose images often carry burned-in
// text or a face: an object of one of them without Burned In Annotation is
// refused with ErrBurnedIn unless the caller accepts the risk. Secondary
// capture SOP classes and encapsulated documents are treated alike whatever
// their modality.
var RiskyModalities = map[string]bool{
	"US": true, "SC": true, "XA": true, "RF": true, "ES": true, "XC": true, "OT": true,
	"DOC": true, "GM": true, "SM": true, "OP": true, "IVUS": true, "DG": true,
}

// riskyClassPrefixes are SOP classes treated as risky: secondary capture
// (1.2.840.10008.5.1.4.1.1.7…) and encapsulated documents (…1.1.104…).
var riskyClassPrefixes = []string{"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.104."}

// Config is what Transform needs besides the profile.
type Config struct {
	Profile *Profile
	// Secret keys the UID remapping, the date shift and the patient
	// pseudonym: the same secret gives the same output for the same input,
	// so that a research set stays linkable across exports; without it the
	// mapping cannot be reversed or recomputed. At least MinSecret bytes.
	Secret []byte
	// AcceptBurnedIn exports objects ErrBurnedIn would refuse.
	AcceptBurnedIn bool
}

// Result describes a de-identified object.
type Result struct {
	SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID string
	PatientID                                                        string // the pseudonym written
	DateShiftDays                                                    int    // 0 unless dates were shifted
}

// compiled is the table as lookups: exact tags, then the repeating-group
// patterns (50XX,XXXX) and (60XX,eeee).
type compiled struct {
	exact   map[dicom.Tag]*row
	curve   *row            // (50XX,XXXX)
	overlay map[uint16]*row // (60XX,eeee) by element
	private *row            // (gggg,eeee) odd groups
	safe    map[safeKey]string
}

type safeKey struct {
	group   uint16
	elem    uint8
	creator string
}

var tableIndex = compile()

// overlayRest is the action for the attributes of a repeating overlay
// group (60xx) that Table E.1-1 does not list.
var overlayRest = &row{tag: "(60XX,eeee)", name: "Overlay Plane (rest)", basic: "X"}

func compile() *compiled {
	c := &compiled{exact: map[dicom.Tag]*row{}, overlay: map[uint16]*row{}, safe: map[safeKey]string{}}
	for i := range table {
		r := &table[i]
		g, e := r.tag[1:5], r.tag[6:10]
		switch {
		case r.tag == "(gggg,eeee)":
			c.private = r
		case g == "50XX" && e == "XXXX":
			c.curve = r
		case g == "60XX":
			n, err := strconv.ParseUint(e, 16, 16)
			if err != nil {
				panic("deid: table row " + r.tag)
			}
			c.overlay[uint16(n)] = r
		default:
			gn, err1 := strconv.ParseUint(g, 16, 16)
			en, err2 := strconv.ParseUint(e, 16, 16)
			if err1 != nil || err2 != nil {
				panic("deid: table row " + r.tag)
			}
			c.exact[dicom.NewTag(uint16(gn), uint16(en))] = r
		}
	}
	for _, s := range safePrivate {
		gn, err1 := strconv.ParseUint(s.tag[1:5], 16, 16)
		en, err2 := strconv.ParseUint(s.tag[8:10], 16, 8)
		if err1 != nil || err2 != nil || s.tag[6:8] != "XX" {
			panic("deid: safe private row " + s.tag)
		}
		c.safe[safeKey{uint16(gn), uint8(en), s.creator}] = s.vr
	}
	return c
}

// rowFor returns the table row governing t (nil: not in the table).
func (c *compiled) rowFor(t dicom.Tag) *row {
	if r := c.exact[t]; r != nil {
		return r
	}
	g := t.Group()
	if g&1 == 0 && g >= 0x5000 && g <= 0x501E {
		return c.curve
	}
	if g&1 == 0 && g >= 0x6000 && g <= 0x601E {
		if r := c.overlay[t.Element()]; r != nil {
			return r
		}
		// The rest of an overlay goes with its Overlay Data: an
		// Overlay Plane without it would be incomplete.
		return overlayRest
	}
	return nil
}

var (
	tagPatientName       = dicom.NewTag(0x0010, 0x0010)
	tagPatientID         = dicom.NewTag(0x0010, 0x0020)
	tagBirthDate         = dicom.NewTag(0x0010, 0x0030)
	tagOtherIDs          = dicom.NewTag(0x0010, 0x1000)
	tagOtherNames        = dicom.NewTag(0x0010, 0x1001)
	tagAccession         = dicom.NewTag(0x0008, 0x0050)
	tagSOPClass          = dicom.NewTag(0x0008, 0x0016)
	tagSOPInstance       = dicom.NewTag(0x0008, 0x0018)
	tagStudyUID          = dicom.NewTag(0x0020, 0x000D)
	tagSeriesUID         = dicom.NewTag(0x0020, 0x000E)
	tagBurnedIn          = dicom.NewTag(0x0028, 0x0301)
	tagVisualFeatures    = dicom.NewTag(0x0028, 0x0302)
	tagLongitudinal      = dicom.NewTag(0x0028, 0x0303)
	tagIdentityRemoved   = dicom.NewTag(0x0012, 0x0062)
	tagMethod            = dicom.NewTag(0x0012, 0x0063)
	tagMethodCodes       = dicom.NewTag(0x0012, 0x0064)
	tagCodeValue         = dicom.NewTag(0x0008, 0x0100)
	tagCodingScheme      = dicom.NewTag(0x0008, 0x0102)
	tagCodeMeaning       = dicom.NewTag(0x0008, 0x0104)
	tagModalityTag       = dicom.Modality
	tagSpecificCharset   = dicom.SpecificCharacterSet
	tagInstitutionName   = dicom.NewTag(0x0008, 0x0080)
	tagReferringPhysName = dicom.NewTag(0x0008, 0x0090)
)

// lookaheadTags are read before anything is written.
var lookaheadTags = map[dicom.Tag]bool{
	tagPatientName: true, tagPatientID: true, tagBirthDate: true, tagOtherIDs: true, tagOtherNames: true,
	tagAccession: true, tagSOPClass: true, tagSOPInstance: true, tagStudyUID: true, tagSeriesUID: true,
	tagModalityTag: true, tagBurnedIn: true, tagVisualFeatures: true, tagInstitutionName: true, tagReferringPhysName: true,
}

// Transform reads a Part 10 object from src and writes it de-identified,
// as a Part 10 object in the same transfer syntax, to dst. Nothing is
// written when the object is refused (ErrBurnedIn, bad input found before
// the pixel data); on an error found later dst holds a partial object the
// caller must discard. Values are streamed; the attributes before Burned
// In Annotation are read ahead first (dicom.MaxLookahead bounds them).
func Transform(dst io.Writer, src io.Reader, cfg *Config) (*Result, error) {
	if cfg == nil || cfg.Profile == nil {
		return nil, errors.New("deid: no profile")
	}
	if len(cfg.Secret) < MinSecret {
		return nil, fmt.Errorf("deid: the secret must have at least %d bytes", MinSecret)
	}
	meta, br, err := dicom.ReadFileHeader(src, dicom.DefaultMetaLimit)
	if err != nil {
		return nil, err
	}
	ts := dicom.LookupTransferSyntax(meta.TransferSyntaxUID)
	if ts == nil {
		return nil, dicom.ErrNoTransferSyntax
	}
	t := &transformer{cfg: cfg, p: cfg.Profile, c: tableIndex, creators: map[creatorKey]string{}}
	res := &Result{}
	rw := &dicom.Rewriter{
		Lookahead: func(tag dicom.Tag) bool { return lookaheadTags[tag] },
		Until:     tagVisualFeatures,
		Prepare: func(a *dicom.Attrs) ([]*dicom.Element, error) {
			adds, err := t.prepare(a, res)
			if err != nil {
				return nil, err
			}
			class := strings.TrimRight(meta.MediaStorageSOPClassUID, "\x00 ")
			inst := strings.TrimRight(meta.MediaStorageSOPInstanceUID, "\x00 ")
			if class == "" {
				class = res.SOPClassUID
			}
			if inst == "" {
				inst = res.SOPInstanceUID
			} else {
				inst = t.uid(inst)
			}
			if class == "" || inst == "" {
				return nil, errors.New("deid: the object has no SOP Class or SOP Instance UID")
			}
			m := &dicom.FileMeta{MediaStorageSOPClassUID: class, MediaStorageSOPInstanceUID: inst, TransferSyntaxUID: ts.UID}
			if err := dicom.WriteFileHeader(dst, m); err != nil {
				return nil, err
			}
			return adds, nil
		},
		Edit: t.edit,
	}
	if err := dicom.Rewrite(dst, br, ts, rw); err != nil {
		return nil, err
	}
	return res, nil
}

type creatorKey struct {
	ds    int64
	group uint16
	block uint8
}

type transformer struct {
	cfg      *Config
	p        *Profile
	c        *compiled
	charset  []string
	shift    int      // days, negative
	pseudo   string   // patient pseudonym
	idents   []string // identifying values, upper case, for cleaning text
	creators map[creatorKey]string
}

func (t *transformer) mac(kind, v string) []byte {
	h := hmac.New(sha256.New, t.cfg.Secret)
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(v))
	return h.Sum(nil)
}

// uid remaps a UID: 2.25. and the decimal of the first 128 bits of
// HMAC-SHA256(secret, "uid" 0 uid), so that it cannot be reversed without
// the secret and is the same in every object and run. Retain UIDs keeps it.
func (t *transformer) uid(u string) string {
	if t.p.Has(RetainUIDs) || u == "" {
		return u
	}
	return UIDFor(t.cfg.Secret, u)
}

// UIDFor is the UID Transform writes for u under secret.
func UIDFor(secret []byte, u string) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("uid\x00"))
	h.Write([]byte(u))
	return "2.25." + new(big.Int).SetBytes(h.Sum(nil)[:16]).String()
}

func (t *transformer) prepare(a *dicom.Attrs, res *Result) ([]*dicom.Element, error) {
	t.charset = a.Charset()
	str := func(tag dicom.Tag) string { return strings.TrimSpace(a.String(tag)) }
	if !t.cfg.AcceptBurnedIn {
		if err := burnedIn(str(tagBurnedIn), str(tagVisualFeatures), str(tagModalityTag), str(tagSOPClass)); err != nil {
			return nil, err
		}
	}
	pid := str(tagPatientID)
	sum := t.mac("patient", pid)
	t.pseudo = fmt.Sprintf("ANON%X", sum[:8])
	if t.p.Has(RetainModifiedDates) {
		v := binary.BigEndian.Uint64(t.mac("date-shift", pid))
		t.shift = -int(1 + v%MaxDateShift)
		res.DateShiftDays = t.shift
	}
	for _, tag := range []dicom.Tag{tagPatientID, tagOtherIDs, tagBirthDate, tagAccession, tagInstitutionName} {
		for _, v := range strings.Split(str(tag), "\\") {
			if v = strings.TrimSpace(v); len(v) >= 3 {
				t.idents = append(t.idents, strings.ToUpper(v))
			}
		}
	}
	for _, tag := range []dicom.Tag{tagPatientName, tagOtherNames, tagReferringPhysName} {
		for _, part := range strings.FieldsFunc(str(tag), func(r rune) bool { return strings.ContainsRune("^=\\ ,", r) }) {
			if len(part) >= 3 {
				t.idents = append(t.idents, strings.ToUpper(part))
			}
		}
	}
	res.SOPClassUID = str(tagSOPClass)
	res.SOPInstanceUID = t.uid(str(tagSOPInstance))
	res.StudyInstanceUID = t.uid(str(tagStudyUID))
	res.SeriesInstanceUID = t.uid(str(tagSeriesUID))
	res.PatientID = t.pseudo
	return t.additions(), nil
}

// burnedIn decides the burned-in annotation risk.
func burnedIn(burned, visual, modality, class string) error {
	switch {
	case strings.EqualFold(burned, "YES"):
		return fmt.Errorf("%w: Burned In Annotation is YES", ErrBurnedIn)
	case strings.EqualFold(visual, "YES"):
		return fmt.Errorf("%w: Recognizable Visual Features is YES", ErrBurnedIn)
	case burned != "":
		return nil
	case RiskyModalities[strings.ToUpper(modality)]:
		return fmt.Errorf("%w: modality %s without Burned In Annotation", ErrBurnedIn, modality)
	}
	for _, p := range riskyClassPrefixes {
		if strings.HasPrefix(class, p) {
			return fmt.Errorf("%w: SOP class %s without Burned In Annotation", ErrBurnedIn, class)
		}
	}
	return nil
}

// Method is the De-identification Method (0012,0063) Transform writes.
func (p *Profile) Method() string {
	return "Ward PS3.15 " + Edition + " E.1-1 " + p.String()
}

func (t *transformer) additions() []*dicom.Element {
	str := func(tag dicom.Tag, vr, v string) *dicom.Element {
		return &dicom.Element{Tag: tag, VR: vr, Value: pad([]byte(v), vr)}
	}
	var items []*dicom.DataSet
	for _, o := range append([]Option{basicName}, t.p.sorted()...) {
		c := codes[o]
		items = append(items, &dicom.DataSet{Elements: []*dicom.Element{
			str(tagCodeValue, "SH", c.value), str(tagCodingScheme, "SH", "DCM"), str(tagCodeMeaning, "LO", c.meaning),
		}})
	}
	longi := "REMOVED"
	switch {
	case t.p.Has(RetainModifiedDates):
		longi = "MODIFIED"
	case t.p.Has(RetainFullDates):
		longi = "UNMODIFIED"
	}
	return []*dicom.Element{
		str(tagIdentityRemoved, "CS", "YES"),
		str(tagMethod, "LO", t.p.Method()),
		{Tag: tagMethodCodes, VR: "SQ", Items: items},
		str(tagLongitudinal, "CS", longi),
	}
}

// pad pads a value to even length as its VR wants.
func pad(b []byte, vr string) []byte {
	if len(b)%2 == 0 {
		return b
	}
	if vr == "UI" {
		return append(b, 0)
	}
	return append(b, ' ')
}

// edit decides one element.
func (t *transformer) edit(e *dicom.RewriteElement) dicom.Edit {
	g := e.Tag.Group()
	if g&1 == 1 {
		return t.editPrivate(e)
	}
	if g == 0x0002 || g == 0x0000 || g == 0x0004 || g == 0x0006 {
		// Meta, command and directory elements have no place in a data
		// set (Table E.1-1 lists some for their misuse): removed.
		return dicom.Edit{Op: dicom.EditRemove}
	}
	if e.VR == "UN" && !e.Sequence && dicom.VROf(e.Tag) == "SQ" {
		// A sequence sent as an opaque UN value: its items cannot be
		// de-identified, so it goes.
		return dicom.Edit{Op: dicom.EditRemove}
	}
	r := t.c.rowFor(e.Tag)
	if r == nil {
		switch e.VR {
		case "PN":
			// A person's name the table (of its edition) does not list.
			return dicom.Edit{Op: dicom.EditRemove}
		case "DA", "DT", "TM":
			// A date or time the table (of its edition) does not list:
			// as its listed dates and times are.
			return t.apply(e, t.p.action(&row{basic: "X/D", fullDates: "K", modifDates: "C"}))
		}
		return dicom.Edit{}
	}
	top := len(e.Path) == 0
	if top && (e.Tag == tagPatientID || e.Tag == tagPatientName) {
		// A pseudonym from the secret keeps one patient's objects
		// together (Z permits a dummy value).
		return replace(e, []byte(t.pseudo))
	}
	act := t.p.action(r)
	if act == "C" && r.modifDates == "C" && t.p.Has(RetainModifiedDates) && e.VR == "UN" && !e.Sequence {
		// A date or time of an attribute Ward's dictionary does not
		// know (implicit VR, or sent as UN): shifted when its values read
		// as dates, else emptied. Cleaned as text it would stay unshifted.
		return t.shiftDates(e)
	}
	return t.apply(e, act)
}

// actionKind is what an action code of Table E.1-1 comes to in Ward.
type actionKind int

const (
	actRemove actionKind = iota
	actKeep
	actEmpty
	actDummy
	actRemap
	actClean
)

// actionOf maps each action code of the table to what Ward does. For the
// combined codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) Ward takes the one that
// keeps the attribute, without its value: it does not know per IOD whether
// the attribute is required. X/Z/U* is a sequence of references: removed,
// emptied, or kept with the UIDs it contains replaced (U). The
// generator refuses a table with a code not listed here, and
// TestTableActions checks table_gen.go the same way.
var actionOf = map[string]actionKind{
	"": actKeep, "K": actKeep,
	"X": actRemove,
	"Z": actEmpty, "X/Z": actEmpty,
	"D": actDummy, "X/D": actDummy, "X/Z/D": actDummy, "Z/D": actDummy,
	"U": actRemap, "X/Z/U": actRemap, "X/Z/U*": actRemap,
	"C": actClean,
}

func (t *transformer) apply(e *dicom.RewriteElement, act string) dicom.Edit {
	seq := e.Sequence
	kind, ok := actionOf[act]
	if !ok {
		// An action this code does not know: the safe choice.
		return dicom.Edit{Op: dicom.EditRemove}
	}
	switch kind {
	case actKeep:
		return dicom.Edit{}
	case actEmpty:
		if seq {
			return dicom.Edit{Op: dicom.EditReplace, Element: &dicom.Element{Tag: e.Tag, VR: "SQ", Items: []*dicom.DataSet{}}}
		}
		return replace(e, nil)
	case actDummy:
		if seq {
			return dicom.Edit{} // kept, its items de-identified in turn
		}
		return replace(e, dummy(e.VR))
	case actRemap:
		if seq {
			return dicom.Edit{}
		}
		return t.remapUIDs(e)
	case actClean:
		return t.clean(e)
	}
	return dicom.Edit{Op: dicom.EditRemove}
}

func replace(e *dicom.RewriteElement, v []byte) dicom.Edit {
	return dicom.Edit{Op: dicom.EditReplace, Element: &dicom.Element{Tag: e.Tag, VR: e.VR, Value: pad(v, e.VR)}}
}

// dummy is a value of vr that identifies no one.
func dummy(vr string) []byte {
	switch vr {
	case "DA":
		return []byte("19000101")
	case "DT":
		return []byte("19000101000000")
	case "TM":
		return []byte("000000")
	case "AS":
		return []byte("000Y")
	case "DS", "IS":
		return []byte("0")
	case "AE", "SH", "CS":
		return []byte("ANONYMIZED")
	case "LO", "LT", "ST", "UT", "UC", "PN":
		return []byte("ANONYMIZED")
	case "US", "SS":
		return make([]byte, 2)
	case "UL", "SL", "FL", "AT":
		return make([]byte, 4)
	case "FD", "SV", "UV":
		return make([]byte, 8)
	}
	return nil
}

// remapUIDs remaps each value of a UI element. A UN element (implicit VR,
// or explicit UN, of an attribute Ward's dictionary does not know: many of
// the table's newer U rows) is remapped too when its value is made of UIDs;
// any other value is emptied, as it cannot be a UID Ward can map.
func (t *transformer) remapUIDs(e *dicom.RewriteElement) dicom.Edit {
	if t.p.Has(RetainUIDs) {
		return dicom.Edit{}
	}
	if e.Value == nil || (e.VR != "UI" && !(e.VR == "UN" && uidShaped(e.Value))) {
		return replace(e, nil)
	}
	vals := strings.Split(strings.TrimRight(string(e.Value), "\x00 "), "\\")
	for i, v := range vals {
		vals[i] = t.uid(strings.TrimSpace(v))
	}
	// Padded as a UID is (NUL), whatever the VR it came with.
	v := pad([]byte(strings.Join(vals, "\\")), "UI")
	return dicom.Edit{Op: dicom.EditReplace, Element: &dicom.Element{Tag: e.Tag, VR: e.VR, Value: v}}
}

// uidShaped reports a value of one or more UIDs (digits and dots,
// backslash separated, padded with NUL or space).
func uidShaped(v []byte) bool {
	v = []byte(strings.TrimRight(string(v), "\x00 "))
	if len(v) == 0 {
		return false
	}
	for _, u := range strings.Split(string(v), "\\") {
		if len(u) == 0 || len(u) > 64 || strings.Trim(u, "0123456789.") != "" {
			return false
		}
	}
	return true
}

// clean is action C: dates shifted (modified dates option), sequences
// kept with their items de-identified, text kept only when it contains none
// of the object's identifying values (else emptied).
func (t *transformer) clean(e *dicom.RewriteElement) dicom.Edit {
	if e.Sequence {
		return dicom.Edit{}
	}
	switch e.VR {
	case "DA", "DT":
		if t.p.Has(RetainModifiedDates) {
			return t.shiftDates(e)
		}
	case "TM":
		return dicom.Edit{} // whole-day shifts leave times as they are
	}
	if e.Value == nil {
		return replace(e, nil)
	}
	text, ok := dicom.DecodeText(t.charset, e.VR, e.Value)
	if !ok {
		return replace(e, nil)
	}
	up := strings.ToUpper(text)
	for _, id := range t.idents {
		if strings.Contains(up, id) {
			return replace(e, nil)
		}
	}
	return dicom.Edit{}
}

// shiftDates moves each date of a DA or DT value by t.shift days; a value
// that is not a date is emptied.
func (t *transformer) shiftDates(e *dicom.RewriteElement) dicom.Edit {
	if e.Value == nil {
		return replace(e, nil)
	}
	vals := strings.Split(strings.TrimRight(string(e.Value), "\x00 "), "\\")
	for i, v := range vals {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if len(v) < 8 {
			return replace(e, nil)
		}
		d, err := time.Parse("20060102", v[:8])
		if err != nil {
			return replace(e, nil)
		}
		vals[i] = d.AddDate(0, 0, t.shift).Format("20060102") + v[8:]
	}
	return replace(e, []byte(strings.Join(vals, "\\")))
}

// editPrivate removes private attributes, or under Retain Safe Private
// keeps those of Table E.3.10-1 (and their creators).
func (t *transformer) editPrivate(e *dicom.RewriteElement) dicom.Edit {
	g, el := e.Tag.Group(), e.Tag.Element()
	if !t.p.Has(RetainSafePrivate) || g <= 0x0007 || g == 0xFFFF {
		return dicom.Edit{Op: dicom.EditRemove}
	}
	if el >= 0x0010 && el <= 0x00FF {
		creator := strings.TrimRight(string(e.Value), "\x00 ")
		t.creators[creatorKey{e.DataSet, g, uint8(el)}] = creator
		for k := range t.c.safe {
			if k.group == g && k.creator == creator {
				return dicom.Edit{}
			}
		}
		return dicom.Edit{Op: dicom.EditRemove}
	}
	if el < 0x1000 {
		return dicom.Edit{Op: dicom.EditRemove}
	}
	creator, ok := t.creators[creatorKey{e.DataSet, g, uint8(el >> 8)}]
	if !ok {
		return dicom.Edit{Op: dicom.EditRemove}
	}
	vr, ok := t.c.safe[safeKey{g, uint8(el), creator}]
	if !ok || !safeVR(vr, e) {
		return dicom.Edit{Op: dicom.EditRemove}
	}
	if vr == "UI" {
		u := *e
		u.VR = "UI"
		return t.remapUIDs(&u)
	}
	return dicom.Edit{}
}

// safeVR reports whether e is encoded as Table E.3.10-1 says (vr; the
// table leaves a few empty, and "OW/OB" allows either). A safe private
// sequence must have been read as one: sent as an opaque UN value (implicit
// VR, or explicit UN, of defined length) its items could not be
// de-identified. Any other VR than the table's, UN aside (unknown to the
// sender), means the element is not what the standard judged safe.
func safeVR(vr string, e *dicom.RewriteElement) bool {
	if vr == "SQ" {
		return e.Sequence
	}
	if e.Sequence {
		return false
	}
	if vr == "" || e.VR == "UN" {
		return true
	}
	for _, v := range strings.Split(vr, "/") {
		if v == e.VR {
			return true
		}
	}
	return false
}
