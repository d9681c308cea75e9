package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/store"
)

// Query/retrieve (store.Querier), with the matching of the SQLite index
// (store/sqlite/query.go), so that both pass the same conformance suite.
//
// Every query is one SELECT built from the keys with bound parameters
// only; no value ever becomes SQL text. Matching follows PS3.4 C.2.2.2:
//
//   - single value: '='; PN compares the *_norm column with
//     store.NormalizePN(value) unless Query.PNCaseSensitive.
//   - wildcard ('*', '?'): LIKE with '%', '_' and '\' escaped, '*' and
//     '?' turned into '%' and '_'; a literal prefix ("DOE*") also becomes
//     "col >= prefix AND col < next(prefix)", which lets PostgreSQL search
//     the column's B-tree index (collation "C") whatever plan it caches
//     for the bound pattern. A value of only '*' is universal matching.
//   - list of UIDs: = ANY (array).
//   - range (DA, TM, DT): "col >= lo" and "col < next(hi)", so that a high
//     bound of lower precision than the stored value includes it.
//     StudyDate and StudyTime given together are two independent ranges
//     (PS3.4 C.2.2.2.5.1; combined date-time matching is not offered).
//   - empty value: "col = ''" (absent attributes are stored as '').
//   - ModalitiesInStudy and SOPClassesInStudy: the study has a series
//     (instance) whose Modality (SOP Class UID) matches.
//   - sequence (C.2.2.2.6): the patient, study or series row holding the
//     sequence has an item whose rows in sequence_value match every item
//     key, each as above.
//
// Values compare as stored strings (bytes of UTF-8): DT values with
// different UTC offsets are not normalised.

// column is one attribute the index holds.
type column struct {
	level store.Level
	expr  string // SQL expression returning text
	norm  string // *_norm column for case-insensitive PN matching
	vr    string
	// in is set for attributes matched through a subquery on the level
	// below: "st.pk IN (SELECT ... WHERE %s)", %s the condition on col.
	in  string
	col string
	// costly attributes are only computed when asked for (Query.Return).
	costly  bool
	noMatch bool
}

// The counts are counted (see schema.go), by index, and only when asked
// for (costly: Query.Return lists them, or is nil).
const (
	patientStudies   = "(SELECT count(*) FROM study x WHERE x.patient_fk = p.pk)::text"
	patientSeries    = "(SELECT count(*) FROM study x JOIN series y ON y.study_fk = x.pk WHERE x.patient_fk = p.pk)::text"
	patientInstances = "(SELECT count(*) FROM study x JOIN series y ON y.study_fk = x.pk JOIN instance z ON z.series_fk = y.pk WHERE x.patient_fk = p.pk)::text"
	studySeries      = "(SELECT count(*) FROM series y WHERE y.study_fk = st.pk)::text"
	studyInstances   = "(SELECT count(*) FROM series y JOIN instance z ON z.series_fk = y.pk WHERE y.study_fk = st.pk)::text"
	seriesInstances  = "(SELECT count(*) FROM instance z WHERE z.series_fk = se.pk)::text"
)

var columns = map[string]column{
	// Patient
	"PatientName":                     {level: store.LevelPatient, expr: "p.patient_name", norm: "p.patient_name_norm", vr: "PN"},
	"PatientID":                       {level: store.LevelPatient, expr: "p.patient_id", vr: "LO"},
	"IssuerOfPatientID":               {level: store.LevelPatient, expr: "p.issuer_of_patient_id", vr: "LO"},
	"PatientBirthDate":                {level: store.LevelPatient, expr: "p.patient_birth_date", vr: "DA"},
	"PatientSex":                      {level: store.LevelPatient, expr: "p.patient_sex", vr: "CS"},
	"NumberOfPatientRelatedStudies":   {level: store.LevelPatient, expr: patientStudies, vr: "IS", noMatch: true, costly: true},
	"NumberOfPatientRelatedSeries":    {level: store.LevelPatient, expr: patientSeries, vr: "IS", noMatch: true, costly: true},
	"NumberOfPatientRelatedInstances": {level: store.LevelPatient, expr: patientInstances, vr: "IS", noMatch: true, costly: true},

	// Study
	"StudyInstanceUID":              {level: store.LevelStudy, expr: "st.study_instance_uid", vr: "UI"},
	"StudyDate":                     {level: store.LevelStudy, expr: "st.study_date", vr: "DA"},
	"StudyTime":                     {level: store.LevelStudy, expr: "st.study_time", vr: "TM"},
	"AccessionNumber":               {level: store.LevelStudy, expr: "st.accession_number", vr: "SH"},
	"StudyID":                       {level: store.LevelStudy, expr: "st.study_id", vr: "SH"},
	"StudyDescription":              {level: store.LevelStudy, expr: "st.study_description", vr: "LO"},
	"ReferringPhysicianName":        {level: store.LevelStudy, expr: "st.referring_physician_name", norm: "st.referring_physician_name_norm", vr: "PN"},
	"NumberOfStudyRelatedSeries":    {level: store.LevelStudy, expr: studySeries, vr: "IS", noMatch: true, costly: true},
	"NumberOfStudyRelatedInstances": {level: store.LevelStudy, expr: studyInstances, vr: "IS", noMatch: true, costly: true},
	"ModalitiesInStudy": {level: store.LevelStudy, vr: "CS", costly: true,
		expr: "(SELECT coalesce(string_agg(DISTINCT x.modality, ','), '') FROM series x WHERE x.study_fk = st.pk AND x.modality <> '')",
		in:   "st.pk IN (SELECT x.study_fk FROM series x WHERE %s)", col: "x.modality"},
	"SOPClassesInStudy": {level: store.LevelStudy, vr: "UI", costly: true,
		expr: "(SELECT coalesce(string_agg(DISTINCT y.sop_class_uid, ','), '') FROM series x JOIN instance y ON y.series_fk = x.pk WHERE x.study_fk = st.pk)",
		in:   "st.pk IN (SELECT x.study_fk FROM instance y JOIN series x ON x.pk = y.series_fk WHERE %s)", col: "y.sop_class_uid"},

	// Series
	"SeriesInstanceUID":               {level: store.LevelSeries, expr: "se.series_instance_uid", vr: "UI"},
	"Modality":                        {level: store.LevelSeries, expr: "se.modality", vr: "CS"},
	"SeriesNumber":                    {level: store.LevelSeries, expr: "se.series_number", vr: "IS"},
	"SeriesDescription":               {level: store.LevelSeries, expr: "se.series_description", vr: "LO"},
	"SeriesDate":                      {level: store.LevelSeries, expr: "se.series_date", vr: "DA"},
	"SeriesTime":                      {level: store.LevelSeries, expr: "se.series_time", vr: "TM"},
	"BodyPartExamined":                {level: store.LevelSeries, expr: "se.body_part_examined", vr: "CS"},
	"PerformedProcedureStepStartDate": {level: store.LevelSeries, expr: "se.performed_procedure_step_start_date", vr: "DA"},
	"NumberOfSeriesRelatedInstances":  {level: store.LevelSeries, expr: seriesInstances, vr: "IS", noMatch: true, costly: true},

	// Image
	"SOPInstanceUID":             {level: store.LevelImage, expr: "i.sop_instance_uid", vr: "UI"},
	"SOPClassUID":                {level: store.LevelImage, expr: "i.sop_class_uid", vr: "UI"},
	"InstanceNumber":             {level: store.LevelImage, expr: "i.instance_number", vr: "IS"},
	"ContentDate":                {level: store.LevelImage, expr: "i.content_date", vr: "DA"},
	"ContentTime":                {level: store.LevelImage, expr: "i.content_time", vr: "TM"},
	"NumberOfFrames":             {level: store.LevelImage, expr: "i.number_of_frames", vr: "IS"},
	"Rows":                       {level: store.LevelImage, expr: "CASE i.pixel_rows WHEN 0 THEN '' ELSE i.pixel_rows::text END", vr: "US", noMatch: true},
	"Columns":                    {level: store.LevelImage, expr: "CASE i.pixel_columns WHEN 0 THEN '' ELSE i.pixel_columns::text END", vr: "US", noMatch: true},
	"AvailableTransferSyntaxUID": {level: store.LevelImage, expr: "i.transfer_syntax_uid", vr: "UI"},
}

// Attributes returns the keywords the index can return at each level
// (index = store.Level), and whether each can be a matching key.
func Attributes() (byLevel [4][]string, matchable map[string]bool) {
	matchable = map[string]bool{}
	for kw, c := range columns {
		byLevel[c.level] = append(byLevel[c.level], kw)
		matchable[kw] = !c.noMatch
	}
	for i := range byLevel {
		slices.Sort(byLevel[i])
	}
	return byLevel, matchable
}

var (
	_ store.Querier         = (*DB)(nil)
	_ store.KeyMatcher      = (*DB)(nil)
	_ store.SequenceIndexer = (*DB)(nil)
)

// IndexesSequences implements store.SequenceIndexer: any sequence, kept
// in the sequence_value table.
func (db *DB) IndexesSequences() bool { return true }

// CanMatch implements store.KeyMatcher.
func (db *DB) CanMatch(attribute string) bool {
	c, ok := columns[attribute]
	return ok && !c.noMatch
}

// owner is the primary key a sequence kept at level l hangs off.
func owner(l store.Level) string {
	return [...]string{"p.pk", "st.pk", "se.pk"}[l]
}

// builder accumulates WHERE conditions and their arguments; conditions
// hold '?' for each argument, numbered when the query is finished
// (number).
type builder struct {
	where []string
	args  []any
}

func (b *builder) add(cond string, args ...any) {
	b.where = append(b.where, cond)
	b.args = append(b.args, args...)
}

// number turns the '?' placeholders of q into $1, $2, ... ('?' inside a
// quoted literal is left alone).
func number(q string) string {
	var sb strings.Builder
	n := 0
	quoted := false
	for i := 0; i < len(q); i++ {
		switch {
		case q[i] == '\'':
			quoted = !quoted
		case q[i] == '?' && !quoted:
			n++
			sb.WriteByte('$')
			sb.WriteString(strconv.Itoa(n))
			continue
		}
		sb.WriteByte(q[i])
	}
	return sb.String()
}

// sequence adds the condition of a sequence key (PS3.4 C.2.2.2.6): the
// owner row is in the set of owners having an item whose rows match every
// item key. The first item key that is not empty-value matching drives
// the search through sequence_value_match_idx; the others are EXISTS on
// the same item by primary key. Empty-value matching is "no non-empty
// value in the item".
func (b *builder) sequence(k *store.Key, l store.Level, pnInsensitive bool) error {
	if k.Level < store.LevelPatient || k.Level > store.LevelSeries {
		return fmt.Errorf("%w: %s is not kept at a patient, study or series level", store.ErrUnsupportedKey, k.Attribute)
	}
	if k.Level > l {
		return fmt.Errorf("%w: %s is below the %s level", store.ErrUnsupportedKey, k.Attribute, l)
	}
	items := make([]*store.Key, 0, len(k.Items))
	for i := range k.Items {
		ik := &k.Items[i]
		if ik.Kind == store.MatchSequence {
			return fmt.Errorf("%w: nested sequence %s in %s", store.ErrUnsupportedKey, ik.Attribute, k.Attribute)
		}
		if ik.Kind == store.MatchWildcard && strings.Trim(ik.Value, "*") == "" {
			continue // universal
		}
		items = append(items, ik)
	}
	if len(items) == 0 {
		return nil // universal: the sequence is a return key
	}
	slices.SortStableFunc(items, func(x, y *store.Key) int {
		return boolInt(x.Kind == store.MatchEmpty) - boolInt(y.Kind == store.MatchEmpty)
	})
	sub := builder{}
	sub.add("s0.attribute = ? AND s0.level = ?", textOf(k.Attribute), int16(k.Level))
	c := column{} // item attributes: any VR, validated by the caller
	for i, ik := range items {
		if i == 0 && ik.Kind != store.MatchEmpty {
			sub.add("s0.keyword = ?", textOf(ik.Attribute))
			if err := sub.cond(ik, c, "s0.value", pnInsensitive); err != nil {
				return err
			}
			continue
		}
		var cb builder
		s := fmt.Sprintf("s%d", i+1)
		neg := ""
		if ik.Kind == store.MatchEmpty {
			neg = "NOT "
			cb.add(s + ".value <> ''")
		} else if err := cb.cond(ik, c, s+".value", pnInsensitive); err != nil {
			return err
		}
		if len(cb.where) == 0 {
			cb.add("TRUE")
		}
		sub.add(neg+"EXISTS (SELECT 1 FROM sequence_value "+s+" WHERE "+s+".level = s0.level AND "+
			s+".owner_fk = s0.owner_fk AND "+s+".attribute = s0.attribute AND "+s+".item = s0.item AND "+
			s+".keyword = ? AND "+strings.Join(cb.where, " AND ")+")", append([]any{textOf(ik.Attribute)}, cb.args...)...)
	}
	b.add(owner(k.Level)+" IN (SELECT s0.owner_fk FROM sequence_value s0 WHERE "+strings.Join(sub.where, " AND ")+")", sub.args...)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sequenceExpr returns the expression of a returned sequence: a JSON
// array of the items in order, each an object of keyword -> value; ”
// when there is none. Its arguments are the level and the attribute.
func sequenceExpr(sp store.SequenceSpec) string {
	return "(SELECT coalesce(json_agg(q.o ORDER BY q.item)::text, '') FROM (SELECT v.item, json_object_agg(v.keyword, v.value) AS o " +
		"FROM sequence_value v WHERE v.level = ? AND v.owner_fk = " + owner(sp.Level) +
		" AND v.attribute = ? GROUP BY v.item) q)"
}

// from returns the FROM clause of a level.
func from(l store.Level) string {
	const (
		p  = "patient p"
		st = " JOIN patient p ON p.pk = st.patient_fk"
		se = " JOIN study st ON st.pk = se.study_fk"
		i  = " JOIN series se ON se.pk = i.series_fk"
	)
	switch l {
	case store.LevelPatient:
		return p
	case store.LevelStudy:
		return "study st" + st
	case store.LevelSeries:
		return "series se" + se + st
	}
	return "instance i" + i + se + st
}

// nextPrefix returns the smallest string greater than every string that
// starts with s, or "" when there is none. It stays valid UTF-8 (a text
// parameter must be): the last character is replaced by the next code
// point, which every string starting with s sorts before under the "C"
// collation (byte order is code point order in UTF-8).
func nextPrefix(s string) string {
	r := []rune(s)
	for len(r) > 0 {
		last := r[len(r)-1]
		next := last + 1
		if next >= 0xD800 && next <= 0xDFFF {
			next = 0xE000
		}
		if next <= 0x10FFFF {
			r[len(r)-1] = next
			return string(r)
		}
		r = r[:len(r)-1]
	}
	return ""
}

// likeEscape turns a DICOM wildcard pattern into a LIKE pattern ('\' the
// escape): '*' and '?' become '%' and '_'; '%', '_' and '\' are literal.
func likeEscape(p string) string {
	var sb strings.Builder
	for _, r := range p {
		switch r {
		case '%', '_', '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case '*':
			sb.WriteByte('%')
		case '?':
			sb.WriteByte('_')
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// cond adds the condition of one key on column expression col.
func (b *builder) cond(k *store.Key, c column, col string, pnInsensitive bool) error {
	norm := func(v string) string { return v }
	if c.vr == "PN" && pnInsensitive {
		norm = store.NormalizePN
		if c.norm != "" {
			col = c.norm
		}
	}
	// A value is matched as Put stores it (textOf).
	norm0 := norm
	norm = func(v string) string { return norm0(textOf(v)) }
	switch k.Kind {
	case store.MatchSequence:
		return fmt.Errorf("%w: sequence matching on %s", store.ErrUnsupportedKey, k.Attribute)
	case store.MatchSingle:
		b.add(col+" = ?", norm(k.Value))
	case store.MatchWildcard:
		if strings.IndexByte(k.Value, 0) >= 0 {
			return fmt.Errorf("%w: a NUL in the pattern of %s", store.ErrUnsupportedKey, k.Attribute)
		}
		pat := norm(k.Value)
		if strings.Trim(pat, "*") == "" {
			return nil // universal
		}
		prefix := pat
		if i := strings.IndexAny(pat, "*?"); i >= 0 {
			prefix = pat[:i]
		}
		if prefix != "" {
			if next := nextPrefix(prefix); next != "" {
				b.add(col+" >= ? AND "+col+" < ?", prefix, next)
			} else {
				b.add(col+" >= ?", prefix)
			}
		}
		b.add(col+" LIKE ?", likeEscape(pat))
	case store.MatchList:
		if len(k.Values) == 0 {
			return fmt.Errorf("%w: empty list for %s", store.ErrUnsupportedKey, k.Attribute)
		}
		vals := make([]string, 0, len(k.Values))
		for _, v := range k.Values {
			vals = append(vals, norm(v))
		}
		b.add(col+" = ANY (?::text[])", vals)
	case store.MatchRange:
		switch c.vr {
		case "DA", "TM", "DT", "": // "": an item attribute, validated by the caller
		default:
			return fmt.Errorf("%w: range matching on %s (%s)", store.ErrUnsupportedKey, k.Attribute, c.vr)
		}
		if k.Lo == "" && k.Hi == "" {
			return nil
		}
		if k.Lo != "" {
			b.add(col+" >= ?", textOf(k.Lo))
		}
		if k.Hi != "" {
			if next := nextPrefix(textOf(k.Hi)); next != "" {
				b.add(col+" < ?", next)
			}
		}
		b.add(col + " <> ''") // an empty value is in no range
	case store.MatchEmpty:
		b.add(col + " = ''")
	default:
		return fmt.Errorf("%w: unknown matching kind %d for %s", store.ErrUnsupportedKey, k.Kind, k.Attribute)
	}
	return nil
}

// key adds the conditions of one key at query level l.
func (b *builder) key(k *store.Key, l store.Level, pnInsensitive bool) error {
	if k.Kind == store.MatchSequence {
		return b.sequence(k, l, pnInsensitive)
	}
	c, ok := columns[k.Attribute]
	if !ok || c.noMatch {
		return fmt.Errorf("%w: %s", store.ErrUnsupportedKey, k.Attribute)
	}
	if c.level > l {
		return fmt.Errorf("%w: %s is below the %s level", store.ErrUnsupportedKey, k.Attribute, l)
	}
	if c.in == "" {
		return b.cond(k, c, c.expr, pnInsensitive)
	}
	if k.Kind == store.MatchEmpty {
		// No series (instance) with a non-empty value.
		b.add("NOT " + fmt.Sprintf(c.in, c.col+" <> ''"))
		return nil
	}
	var sub builder
	if err := sub.cond(k, c, c.col, pnInsensitive); err != nil {
		return err
	}
	if len(sub.where) == 0 {
		return nil
	}
	b.add(fmt.Sprintf(c.in, strings.Join(sub.where, " AND ")), sub.args...)
	return nil
}

// where builds the WHERE clause of q (empty when q has no conditions).
func where(q *store.Query) (string, []any, error) {
	if q.Level < store.LevelPatient || q.Level > store.LevelImage {
		return "", nil, fmt.Errorf("postgres: query: invalid level %d", q.Level)
	}
	if q.Level == store.LevelPatient && !q.PatientRoot {
		return "", nil, fmt.Errorf("postgres: query: %w: PATIENT level in the Study Root model", store.ErrUnsupportedKey)
	}
	var b builder
	for i := range q.Keys {
		if err := b.key(&q.Keys[i], q.Level, !q.PNCaseSensitive); err != nil {
			return "", nil, fmt.Errorf("postgres: query: %w", err)
		}
	}
	if len(b.where) == 0 {
		return "", nil, nil
	}
	return " WHERE " + strings.Join(b.where, " AND "), b.args, nil
}

// levelAlias is each level's table alias in from.
var levelAlias = map[store.Level]string{store.LevelPatient: "p", store.LevelStudy: "st", store.LevelSeries: "se", store.LevelImage: "i"}

// selectQuery builds the SELECT of Query: the columns returned (keywords)
// and the SQL with its arguments.
func selectQuery(q *store.Query) (kws []string, query string, args []any, err error) {
	w, args, err := where(q)
	if err != nil {
		return nil, "", nil, err
	}
	var want map[string]bool
	if q.Return != nil {
		want = make(map[string]bool, len(q.Return))
		for _, kw := range q.Return {
			want[kw] = true
		}
	}
	byLevel, _ := Attributes()
	var exprs []string
	for l := store.LevelPatient; l <= q.Level; l++ {
		for _, kw := range byLevel[l] {
			c := columns[kw]
			if c.costly && want != nil && !want[kw] {
				continue
			}
			kws = append(kws, kw)
			exprs = append(exprs, c.expr)
		}
	}
	var selArgs []any
	for _, sp := range q.ReturnSequences {
		if sp.Level > q.Level || sp.Level > store.LevelSeries || sp.Level < store.LevelPatient {
			continue
		}
		if _, dup := columns[sp.Attribute]; dup || slices.Contains(kws, sp.Attribute) {
			continue
		}
		kws = append(kws, sp.Attribute)
		exprs = append(exprs, sequenceExpr(sp))
		selArgs = append(selArgs, int16(sp.Level), textOf(sp.Attribute))
	}
	if len(selArgs) > 0 {
		args = append(selArgs, args...)
	}
	// In key order: rows stored later come later, so that paging with
	// offset stays exact while objects arrive.
	query = "SELECT " + strings.Join(exprs, ", ") + " FROM " + from(q.Level) + w + " ORDER BY " + levelAlias[q.Level] + ".pk"
	lim, limArgs := limitClause(q)
	return kws, number(query + lim), append(args, limArgs...), nil
}

// limitClause is the LIMIT/OFFSET of q ("" for neither) and its
// arguments, parameters so that a client paging through offsets reuses
// the statement pgx prepared for its query's shape.
func limitClause(q *store.Query) (string, []any) {
	switch {
	case q.Offset > 0:
		var limit *int64
		if q.Limit > 0 {
			l := int64(q.Limit)
			limit = &l
		}
		return " LIMIT ?::bigint OFFSET ?::bigint", []any{limit, int64(q.Offset)}
	case q.Limit > 0:
		return " LIMIT ?::bigint", []any{int64(q.Limit)}
	}
	return "", nil
}

// queryMode runs the queries of Query and Instances as unnamed
// statements (their descriptions cached, one round trip), which the
// server plans for the values of each run: a cached generic plan would be
// made for unknown values, and a range with a bound or a wildcard's
// prefix can select one row or all. Planning costs well under a
// millisecond; reading the wrong way, a whole table.
const queryMode = pgx.QueryExecModeCacheDescribe

// Query implements store.Querier. Matches come in the order they were
// first stored (by the level's key).
func (db *DB) Query(ctx context.Context, q *store.Query, fn func(store.Match) error) error {
	kws, query, args, err := selectQuery(q)
	if err != nil {
		return err
	}
	seqStart := len(kws)
	for i, kw := range kws {
		if _, ok := columns[kw]; !ok {
			seqStart = i
			break
		}
	}
	vals := make([]string, len(kws))
	ptrs := make([]any, len(kws))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	// Run again on a connection failure only while nothing was passed on.
	delivered := false
	var fnErr error
	err = db.read(ctx, func() error {
		rows, err := db.pool.Query(ctx, query, append([]any{queryMode}, args...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			m := make(store.Match, len(kws))
			for i, kw := range kws {
				v := vals[i]
				if i >= seqStart && v == "[]" {
					v = ""
				}
				if i < seqStart && columns[kw].in != "" && v != "" {
					parts := strings.Split(v, ",")
					slices.Sort(parts)
					v = strings.Join(parts, `\`)
				}
				m[kw] = v
			}
			delivered = true
			if err := fn(m); err != nil {
				fnErr = err
				return nil
			}
		}
		if err := rows.Err(); err != nil && delivered {
			return fmt.Errorf("%w: %w", errPartial, err)
		} else if err != nil {
			return err
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return db.fail("query", err)
	}
	return nil
}

// errPartial marks a read that failed after passing rows on: it is not
// run again.
var errPartial = errors.New("the connection failed during the answer")

// instanceOrder orders instances by study, series and instance number (as
// an integer: its leading digits, 0 without; the SQLite index's CAST), then
// key.
const instanceOrder = `
ORDER BY st.pk, se.pk, coalesce(substring(i.instance_number from '^\s*([-+]?[0-9]{1,18})')::bigint, 0), i.pk`

// instancesQuery builds the SELECT of Instances.
func instancesQuery(q *store.Query) (string, []any, error) {
	w, args, err := where(q)
	if err != nil {
		return "", nil, err
	}
	query := `SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.instance_number,
	se.series_instance_uid, se.modality, st.study_instance_uid, p.patient_id, p.issuer_of_patient_id,
	i.blob_key, i.size, i.pk
FROM ` + from(store.LevelImage) + w + instanceOrder
	lim, limArgs := limitClause(q)
	return number(query + lim), append(args, limArgs...), nil
}

// metadataBatch is how many instances' kept metadata one query reads.
const metadataBatch = 1000

// Instances implements store.Querier: the instances under the matches of
// q, ordered by study, series and instance number. Only the identifying
// and storage fields of each Instance are set (UIDs, transfer syntax,
// instance number, modality, patient ID and issuer, blob key and size),
// and the kept metadata when q.WithMetadata asks: read after the rows, by
// key, up to metadataBatch instances a query (one for most series), so
// that sorting the rows does not carry it.
func (db *DB) Instances(ctx context.Context, q *store.Query, fn func(*store.Instance) error) error {
	query, args, err := instancesQuery(q)
	if err != nil {
		return err
	}
	type row struct {
		in store.Instance
		pk int64
	}
	var list []row
	err = db.read(ctx, func() (err error) {
		rows, _ := db.pool.Query(ctx, query, append([]any{queryMode}, args...)...)
		list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.in.SOPInstanceUID, &x.in.SOPClassUID, &x.in.TransferSyntaxUID, &x.in.InstanceNumber,
				&x.in.SeriesInstanceUID, &x.in.Modality, &x.in.StudyInstanceUID, &x.in.PatientID, &x.in.IssuerOfPatientID,
				&x.in.BlobKey, &x.in.Size, &x.pk)
			return x, err
		})
		return err
	})
	if err != nil {
		return db.fail("instances", err)
	}
	for start := 0; start < len(list); start += metadataBatch {
		end := min(start+metadataBatch, len(list))
		if q.WithMetadata {
			pks := make([]int64, 0, end-start)
			for i := start; i < end; i++ {
				pks = append(pks, list[i].pk)
			}
			byPK := make(map[int64][]byte, end-start)
			err := db.read(ctx, func() error {
				clear(byPK)
				mrows, _ := db.pool.Query(ctx, `SELECT instance_fk, metadata FROM instance_metadata WHERE instance_fk = ANY ($1)`, pks)
				var pk int64
				var b []byte
				_, err := pgx.ForEachRow(mrows, []any{&pk, &b}, func() error {
					byPK[pk] = b
					return nil
				})
				return err
			})
			if err != nil {
				return db.fail("instances", err)
			}
			for i := start; i < end; i++ {
				list[i].in.Metadata = byPK[list[i].pk]
			}
		}
		for i := start; i < end; i++ {
			in := list[i].in
			if err := fn(&in); err != nil {
				return err
			}
		}
	}
	return nil
}
