package dicom

// SOPClass names a Storage SOP Class.
type SOPClass struct {
	UID     string
	Name    string
	Retired bool
}

var storageByUID = func() map[string]*SOPClass {
	m := make(map[string]*SOPClass, len(storageSOPClasses))
	for i := range storageSOPClasses {
		m[storageSOPClasses[i].UID] = &storageSOPClasses[i]
	}
	return m
}()

// IsStorageSOPClass reports whether uid is a Storage SOP Class of PS3.4
// Annex B (retired ones included).
func IsStorageSOPClass(uid string) bool {
	_, ok := storageByUID[trimUID(uid)]
	return ok
}

// StorageSOPClasses returns all Storage SOP Classes, sorted by UID.
func StorageSOPClasses() []SOPClass {
	return append([]SOPClass(nil), storageSOPClasses...)
}

// UIDName returns the dictionary name of any well-known UID (SOP class,
// transfer syntax, ...), or "" when unknown.
func UIDName(uid string) string {
	uid = trimUID(uid)
	if ts, ok := tsByUID[uid]; ok {
		return ts.Name
	}
	if c, ok := storageByUID[uid]; ok {
		return c.Name
	}
	if u, ok := dictByUID[uid]; ok {
		return u.name
	}
	return ""
}
