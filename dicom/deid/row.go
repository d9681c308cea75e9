package deid

// row is one attribute of PS3.15 Table E.1-1 as transcribed.
type row struct {
	tag, name, basic                                          string
	safePriv, uids, devID, instID, patChars                   string
	fullDates, modifDates, cleanDesc, cleanStruct, cleanGraph string
}

// safeRow is one private attribute of PS3.15 Table E.3.10-1.
type safeRow struct{ tag, creator, vr string }
