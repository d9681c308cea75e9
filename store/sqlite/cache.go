package sqlite

import (
	"sort"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/store"
)

// parentCache remembers, for the patient, study and series rows the writer
// wrote last, their primary key and the values it wrote: a Put whose
// patient, study or series values (sequences included) equal the cached ones
// skips that level's upsert and sequence rewrite, which would change nothing
// but updated_at. Consecutive instances of a series share all three levels,
// so most Puts run 3 statements fewer and dirty 9 fewer index pages.
// updated_at is therefore the time the row's values last changed, not the
// time of the newest instance in it.
//
// Only the writer goroutine uses the cache. An entry is right as long as the
// row it names holds what the entry says, which only the writer changes.
// The cache is dropped whenever that may no longer hold:
//   - a savepoint or transaction is rolled back after the cache changed
//     (writer.rollbackTo, writer.rollback);
//   - an instance is deleted, or a Put moves an instance to another series,
//     a series to another study or a study to another patient: triggers may
//     then delete the parents left empty, and SQLite may reuse their keys;
//   - another connection committed (PRAGMA data_version changed).
type parentCache struct {
	patients map[patientKey]cachedPatient
	studies  map[string]cachedStudy
	series   map[string]cachedSeries
}

// maxCached bounds each level's map; a full map is emptied.
const maxCached = 256

type patientKey struct{ id, issuer string }

type patientVals struct {
	name, birthDate, sex string
	seqs                 string
}

type cachedPatient struct {
	pk int64
	v  patientVals
}

type studyVals struct {
	patient                                    int64
	date, time, accession, id, desc, referring string
	seqs                                       string
}

type cachedStudy struct {
	pk int64
	v  studyVals
}

type seriesVals struct {
	study                                                 int64
	modality, number, desc, date, time, bodyPart, ppsDate string
	seqs                                                  string
}

type cachedSeries struct {
	pk int64
	v  seriesVals
}

func (c *parentCache) clear() {
	c.patients, c.studies, c.series = nil, nil, nil
}

func (c *parentCache) empty() bool {
	return len(c.patients) == 0 && len(c.studies) == 0 && len(c.series) == 0
}

func (c *parentCache) patient(k patientKey, v patientVals) (int64, bool) {
	e, ok := c.patients[k]
	if !ok || e.v != v {
		return 0, false
	}
	return e.pk, true
}

func (c *parentCache) study(uid string, v studyVals) (int64, bool) {
	e, ok := c.studies[uid]
	if !ok || e.v != v {
		return 0, false
	}
	return e.pk, true
}

func (c *parentCache) seriesPK(uid string, v seriesVals) (int64, bool) {
	e, ok := c.series[uid]
	if !ok || e.v != v {
		return 0, false
	}
	return e.pk, true
}

func (c *parentCache) setPatient(k patientKey, pk int64, v patientVals) {
	if c.patients == nil || len(c.patients) >= maxCached {
		c.patients = make(map[patientKey]cachedPatient)
	}
	c.patients[k] = cachedPatient{pk, v}
}

func (c *parentCache) setStudy(uid string, pk int64, v studyVals) {
	if c.studies == nil || len(c.studies) >= maxCached {
		c.studies = make(map[string]cachedStudy)
	}
	c.studies[uid] = cachedStudy{pk, v}
}

func (c *parentCache) setSeries(uid string, pk int64, v seriesVals) {
	if c.series == nil || len(c.series) >= maxCached {
		c.series = make(map[string]cachedSeries)
	}
	c.series[uid] = cachedSeries{pk, v}
}

// levelSequences returns, for each of the patient, study and series levels,
// a string that is equal for two instances exactly when they hold the same
// sequence items at that level ("" for none).
func levelSequences(items []store.SequenceItem) [3]string {
	var out [3]string
	if len(items) == 0 {
		return out
	}
	var b [3]strings.Builder
	var kws []string
	for _, it := range items {
		if it.Level < store.LevelPatient || it.Level > store.LevelSeries {
			continue // refused by putSequences
		}
		sb := &b[it.Level]
		field(sb, it.Attribute)
		field(sb, strconv.Itoa(it.Item))
		kws = kws[:0]
		for kw := range it.Values {
			kws = append(kws, kw)
		}
		sort.Strings(kws)
		for _, kw := range kws {
			field(sb, kw)
			field(sb, it.Values[kw])
		}
		sb.WriteByte(1)
	}
	for i := range out {
		out[i] = b[i].String()
	}
	return out
}

// field writes s length-prefixed, so that the encoding is unambiguous.
func field(b *strings.Builder, s string) {
	b.WriteString(strconv.Itoa(len(s)))
	b.WriteByte(':')
	b.WriteString(s)
}
