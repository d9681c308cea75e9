package dicom

import "strings"

// dictElement is one registered data element of dict_gen.go.
type dictElement struct {
	tag     Tag
	xmask   uint32 // digits the standard writes as x ("(60xx,3000)"): 0xF each
	vr      string // as the standard writes it: "UI", "US or SS", "OB or OW", "See Note 2"
	vm      string
	keyword string
	retired bool
}

// dictUID is one UID of PS3.6 Table.
type dictUID struct {
	uid, name, keyword, typ string
	retired                 bool
}

var (
	dictByTag     map[Tag]*dictElement
	dictRepeating []*dictElement // elements with x digits, most specific first
	dictByKeyword map[string]Tag
	dictByUID     map[string]*dictUID
)

func init() {
	dictByTag = make(map[Tag]*dictElement, len(dictElements))
	dictByKeyword = make(map[string]Tag, len(dictElements))
	for i := range dictElements {
		e := &dictElements[i]
		if e.xmask == 0 {
			dictByTag[e.tag] = e
		} else {
			dictRepeating = append(dictRepeating, e)
		}
		if e.keyword != "" {
			dictByKeyword[e.keyword] = e.tag
		}
	}
	// A tag matching two forms takes the one with fewer x digits.
	ones := func(m uint32) (n int) {
		for ; m != 0; m &= m - 1 {
			n++
		}
		return n
	}
	for i := 1; i < len(dictRepeating); i++ {
		for j := i; j > 0 && ones(dictRepeating[j].xmask) < ones(dictRepeating[j-1].xmask); j-- {
			dictRepeating[j], dictRepeating[j-1] = dictRepeating[j-1], dictRepeating[j]
		}
	}
	dictByUID = make(map[string]*dictUID, len(dictUIDs))
	for i := range dictUIDs {
		dictByUID[dictUIDs[i].uid] = &dictUIDs[i]
	}
}

// lookupElement finds t in the dictionary: its own entry, else the
// repeating form it belongs to. Where the x digits are the low byte of the
// group (50xx curves, 60xx overlays, 7Fxx variable pixel data), only the
// even groups xx = 00-1E repeat (PS3.5 7.6); other groups of that range are
// not the element. Element 0000 is a group length (PS3.5 7.2), never a
// repeating form's element ((1000,0000) is not Escape Triplet).
func lookupElement(t Tag) *dictElement {
	if e, ok := dictByTag[t]; ok {
		return e
	}
	if t.Element() == 0 {
		return nil
	}
	for _, e := range dictRepeating {
		if uint32(t)&^e.xmask != uint32(e.tag) {
			continue
		}
		if e.xmask&0x00FF0000 == 0x00FF0000 {
			if lo := t.Group() & 0xFF; lo%2 == 1 || lo > 0x1E {
				continue
			}
		}
		return e
	}
	return nil
}

// normaliseVR turns a multi-VR entry of the standard into the one VR used
// for encoding and for JSON: OW where OW is one of them ("OB or OW", "US or
// OW", "US or SS or OW"), else the first ("US or SS" gives US); "UN" for
// entries without a VR ("See Note 2", empty).
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
		if len(p) == 2 && p != "or" && strings.ToUpper(p) == p {
			return p
		}
	}
	return "UN"
}
