// Package sqlmatch is what the SQL index backends (store/sqlite,
// store/postgres) share, so that both answer alike: the builder that
// turns C-FIND keys into SQL conditions, with a Dialect for what their
// engines spell differently (the wildcard operator and its escaping, a
// list of values, the upper bound of a prefix, how a value is made
// text), and the reading of Querier.Instances in pages (Paging).
//
// Every condition holds '?' for each argument, bound as a parameter: no
// value ever becomes SQL text. Matching follows PS3.4 C.2.2.2:
//   - single value: equality; PN case-insensitive unless asked otherwise,
//     through the *_norm columns (store.NormalizePN).
//   - universal (an empty value or '*'): no condition.
//   - wildcard ('*', '?'): the dialect's pattern operator; a literal
//     prefix ("DOE*") also becomes "col >= prefix AND col < next(prefix)",
//     which lets the engine search the column's index whatever it knows
//     of the bound pattern. A value of only '*' is universal matching.
//   - list of UIDs: the dialect's list condition.
//   - range (DA, TM, DT): "col >= lo AND col < next(hi)", so that an upper
//     bound of lower precision than the stored value includes it ("-1200"
//     includes "120000.5"); an empty value is in no range. StudyDate and
//     StudyTime given together are two independent ranges (PS3.4
//     C.2.2.2.5.1; combined date-time matching is not offered).
//   - empty value: the column holds the empty string (absent attributes
//     are stored so).
//   - attributes kept on a lower level (ModalitiesInStudy,
//     SOPClassesInStudy): "owner IN (SELECT ... WHERE cond)".
//   - sequence (PS3.4 C.2.2.2.6): the owner has an item matching every item
//     key, each as above.
//
// Values compare as stored strings: DT values with different UTC offsets
// are not normalised.
package sqlmatch

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ward-pacs/ward/store"
)

// Column is one attribute an index holds.
type Column struct {
	Level store.Level
	Expr  string // SQL expression returning text
	Norm  string // *_norm column for case-insensitive PN matching
	VR    string // "PN", "DA", "TM", "DT", "UI", "IS", "US", "CS", "LO", "SH"...
	// In is set for attributes matched through a subquery on the level
	// below: "st.pk IN (SELECT ... WHERE %s)", %s the condition on Col.
	In  string
	Col string // the column the subquery condition uses
	// Costly attributes are only computed when asked for (Query.Return).
	Costly bool
	// NoMatch is set for attributes that are return keys only.
	NoMatch bool
}

// Dialect is what an SQL engine spells its own way.
type Dialect struct {
	// Name prefixes errors ("sqlite", "postgres").
	Name string
	// Columns are the attributes the index holds, by keyword.
	Columns map[string]Column
	// Text is a value as the index stores it (nil: as it is).
	Text func(string) string
	// Pattern is the condition that col matches the DICOM wildcard
	// pattern pat ('*', '?'), with its one argument.
	Pattern func(col, pat string) (string, any)
	// List is the condition that col is one of vals, with its arguments.
	List func(col string, vals []string) (string, []any)
	// NextPrefix returns the smallest string greater than every string
	// that starts with s, in the index's collation, or "" when there is
	// none.
	NextPrefix func(s string) string
	// Level is a level as a parameter of sequence_value.level.
	Level func(store.Level) any
	// True is the literal of a condition that always holds.
	True string
	// SequenceExpr is the expression of a returned sequence, with two
	// arguments: its level (Level) and its attribute (Text).
	SequenceExpr func(store.SequenceSpec) string
}

// Attributes returns the keywords of d.Columns at each level (index =
// store.Level), sorted, and whether each can be a matching key.
func (d *Dialect) Attributes() (byLevel [4][]string, matchable map[string]bool) {
	matchable = map[string]bool{}
	for kw, c := range d.Columns {
		byLevel[c.Level] = append(byLevel[c.Level], kw)
		matchable[kw] = !c.NoMatch
	}
	for i := range byLevel {
		slices.Sort(byLevel[i])
	}
	return byLevel, matchable
}

// CanMatch reports whether attribute can be a matching key
// (store.KeyMatcher).
func (d *Dialect) CanMatch(attribute string) bool {
	c, ok := d.Columns[attribute]
	return ok && !c.NoMatch
}

func (d *Dialect) text(s string) string {
	if d.Text == nil {
		return s
	}
	return d.Text(s)
}

// Builder accumulates WHERE conditions and their arguments.
type Builder struct {
	Where []string
	Args  []any
	d     *Dialect
}

// NewBuilder returns an empty Builder for d.
func NewBuilder(d *Dialect) *Builder { return &Builder{d: d} }

// Add adds a condition and its arguments.
func (b *Builder) Add(cond string, args ...any) {
	b.Where = append(b.Where, cond)
	b.Args = append(b.Args, args...)
}

// Where builds the WHERE clause of q (empty when q has no conditions) and
// its arguments.
func Where(d *Dialect, q *store.Query) (string, []any, error) {
	if q.Level < store.LevelPatient || q.Level > store.LevelImage {
		return "", nil, fmt.Errorf("%s: query: invalid level %d", d.Name, q.Level)
	}
	if q.Level == store.LevelPatient && !q.PatientRoot {
		return "", nil, fmt.Errorf("%s: query: %w: PATIENT level in the Study Root model", d.Name, store.ErrUnsupportedKey)
	}
	b := NewBuilder(d)
	for i := range q.Keys {
		if err := b.Key(&q.Keys[i], q.Level, !q.PNCaseSensitive); err != nil {
			return "", nil, fmt.Errorf("%s: query: %w", d.Name, err)
		}
	}
	if len(b.Where) == 0 {
		return "", nil, nil
	}
	return " WHERE " + strings.Join(b.Where, " AND "), b.Args, nil
}

// uniqueKeys are the unique keys of the levels (PS3.4 C.6): a Match
// holds those of its level and the levels above whatever Query.Return
// says.
var uniqueKeys = map[string]bool{"PatientID": true, "StudyInstanceUID": true, "SeriesInstanceUID": true, "SOPInstanceUID": true}

// Select builds the parts of the SELECT of q (store.Querier.Query): the
// keywords returned, in order (the attributes of the levels down to
// q.Level: every one when q.Return is nil, else those q.Return lists and
// the unique keys; then the returned
// sequences), their expressions, the WHERE clause, and the arguments of
// the expressions then of the clause. Reading and converting a column
// costs on every row: a C-FIND asking two keys at the IMAGE level would
// otherwise read some forty.
func Select(d *Dialect, q *store.Query) (kws, exprs []string, where string, args []any, err error) {
	where, args, err = Where(d, q)
	if err != nil {
		return nil, nil, "", nil, err
	}
	var want map[string]bool
	if q.Return != nil {
		want = make(map[string]bool, len(q.Return))
		for _, kw := range q.Return {
			want[kw] = true
		}
	}
	byLevel, _ := d.Attributes()
	for l := store.LevelPatient; l <= q.Level; l++ {
		for _, kw := range byLevel[l] {
			c := d.Columns[kw]
			if want != nil && !want[kw] && !uniqueKeys[kw] {
				continue
			}
			kws = append(kws, kw)
			exprs = append(exprs, c.Expr)
		}
	}
	var selArgs []any
	for _, sp := range q.ReturnSequences {
		if sp.Level > q.Level || sp.Level > store.LevelSeries || sp.Level < store.LevelPatient {
			continue
		}
		if _, dup := d.Columns[sp.Attribute]; dup || slices.Contains(kws, sp.Attribute) {
			continue
		}
		kws = append(kws, sp.Attribute)
		exprs = append(exprs, d.SequenceExpr(sp))
		selArgs = append(selArgs, d.Level(sp.Level), d.text(sp.Attribute))
	}
	if len(selArgs) > 0 {
		args = append(selArgs, args...)
	}
	return kws, exprs, where, args, nil
}

// Key adds the conditions of one key at query level l.
func (b *Builder) Key(k *store.Key, l store.Level, pnInsensitive bool) error {
	if k.Kind == store.MatchSequence {
		return b.sequence(k, l, pnInsensitive)
	}
	c, ok := b.d.Columns[k.Attribute]
	if !ok || c.NoMatch {
		return fmt.Errorf("%w: %s", store.ErrUnsupportedKey, k.Attribute)
	}
	if c.Level > l {
		return fmt.Errorf("%w: %s is below the %s level", store.ErrUnsupportedKey, k.Attribute, l)
	}
	if c.In == "" {
		return b.cond(k, c, c.Expr, pnInsensitive)
	}
	if k.Kind == store.MatchEmpty {
		// No series (instance) with a non-empty value.
		b.Add("NOT " + fmt.Sprintf(c.In, c.Col+" <> ''"))
		return nil
	}
	sub := NewBuilder(b.d)
	if err := sub.cond(k, c, c.Col, pnInsensitive); err != nil {
		return err
	}
	if len(sub.Where) == 0 {
		return nil
	}
	b.Add(fmt.Sprintf(c.In, strings.Join(sub.Where, " AND ")), sub.Args...)
	return nil
}

// cond adds the condition of one key on column expression col.
func (b *Builder) cond(k *store.Key, c Column, col string, pnInsensitive bool) error {
	d := b.d
	// A value is matched as the index stores it.
	norm := d.text
	if c.VR == "PN" && pnInsensitive {
		norm = func(v string) string { return store.NormalizePN(d.text(v)) }
		if c.Norm != "" {
			col = c.Norm
		}
	}
	switch k.Kind {
	case store.MatchSequence:
		return fmt.Errorf("%w: sequence matching on %s", store.ErrUnsupportedKey, k.Attribute)
	case store.MatchSingle:
		b.Add(col+" = ?", norm(k.Value))
	case store.MatchWildcard:
		if strings.IndexByte(k.Value, 0) >= 0 {
			// SQLite's GLOB stops at a NUL: "*\x00A" would be "*".
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
			if next := d.NextPrefix(prefix); next != "" {
				b.Add(col+" >= ? AND "+col+" < ?", prefix, next)
			} else {
				b.Add(col+" >= ?", prefix)
			}
		}
		cond, arg := d.Pattern(col, pat)
		b.Add(cond, arg)
	case store.MatchList:
		if len(k.Values) == 0 {
			return fmt.Errorf("%w: empty list for %s", store.ErrUnsupportedKey, k.Attribute)
		}
		vals := make([]string, 0, len(k.Values))
		for _, v := range k.Values {
			vals = append(vals, norm(v))
		}
		cond, args := d.List(col, vals)
		b.Add(cond, args...)
	case store.MatchRange:
		switch c.VR {
		case "DA", "TM", "DT", "": // "": an item attribute, validated by the caller
		default:
			return fmt.Errorf("%w: range matching on %s (%s)", store.ErrUnsupportedKey, k.Attribute, c.VR)
		}
		if k.Lo == "" && k.Hi == "" {
			return nil
		}
		if k.Lo != "" {
			b.Add(col+" >= ?", d.text(k.Lo))
		}
		if k.Hi != "" {
			if next := d.NextPrefix(d.text(k.Hi)); next != "" {
				b.Add(col+" < ?", next)
			}
		}
		b.Add(col + " <> ''") // an empty value is in no range
	case store.MatchEmpty:
		b.Add(col + " = ''")
	default:
		return fmt.Errorf("%w: unknown matching kind %d for %s", store.ErrUnsupportedKey, k.Kind, k.Attribute)
	}
	return nil
}

// sequence adds the condition of a sequence key (PS3.4 C.2.2.2.6): the
// owner row is in the set of owners having an item whose rows match every
// item key. The first item key that is not empty-value matching drives the
// search through sequence_value_match_idx (attribute, keyword, value); the
// others are EXISTS on the same item by primary key. Empty-value matching
// is "no non-empty value in the item".
func (b *Builder) sequence(k *store.Key, l store.Level, pnInsensitive bool) error {
	d := b.d
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
	// Driving key first.
	slices.SortStableFunc(items, func(x, y *store.Key) int {
		return boolInt(x.Kind == store.MatchEmpty) - boolInt(y.Kind == store.MatchEmpty)
	})
	sub := NewBuilder(d)
	sub.Add("s0.attribute = ? AND s0.level = ?", d.text(k.Attribute), d.Level(k.Level))
	c := Column{} // item attributes: any VR, validated by the caller
	for i, ik := range items {
		if i == 0 && ik.Kind != store.MatchEmpty {
			sub.Add("s0.keyword = ?", d.text(ik.Attribute))
			if err := sub.cond(ik, c, "s0.value", pnInsensitive); err != nil {
				return err
			}
			continue
		}
		cb := NewBuilder(d)
		s := fmt.Sprintf("s%d", i+1)
		neg := ""
		if ik.Kind == store.MatchEmpty {
			neg = "NOT "
			cb.Add(s + ".value <> ''")
		} else if err := cb.cond(ik, c, s+".value", pnInsensitive); err != nil {
			return err
		}
		if len(cb.Where) == 0 {
			cb.Add(d.True)
		}
		sub.Add(neg+"EXISTS (SELECT 1 FROM sequence_value "+s+" WHERE "+s+".level = s0.level AND "+
			s+".owner_fk = s0.owner_fk AND "+s+".attribute = s0.attribute AND "+s+".item = s0.item AND "+
			s+".keyword = ? AND "+strings.Join(cb.Where, " AND ")+")", append([]any{d.text(ik.Attribute)}, cb.Args...)...)
	}
	b.Add(Owner(k.Level)+" IN (SELECT s0.owner_fk FROM sequence_value s0 WHERE "+strings.Join(sub.Where, " AND ")+")", sub.Args...)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Owner is the key of a level's row, as sequence_value.owner_fk holds it.
func Owner(l store.Level) string {
	return [...]string{"p.pk", "st.pk", "se.pk"}[l]
}

// LevelAlias is each level's table alias in From.
var LevelAlias = map[store.Level]string{store.LevelPatient: "p", store.LevelStudy: "st", store.LevelSeries: "se", store.LevelImage: "i"}

// From returns the FROM clause of a level: its table joined to those of
// the levels above.
func From(l store.Level) string {
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

// NextPrefixBytes is a Dialect.NextPrefix for a byte-order collation
// that takes any bytes (SQLite's BINARY): the last byte below 0xFF
// incremented, "" for s empty or ending in 0xFF.
func NextPrefixBytes(s string) string {
	if s == "" || s[len(s)-1] == 0xFF {
		return ""
	}
	return s[:len(s)-1] + string([]byte{s[len(s)-1] + 1})
}

// NextPrefixUTF8 is a Dialect.NextPrefix that stays valid UTF-8 (a text
// parameter of PostgreSQL must be): the last character is replaced by
// the next code point, which every string starting with s sorts before
// under a byte-order collation ("C": byte order is code point order in
// UTF-8).
func NextPrefixUTF8(s string) string {
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

// Scanner turns the rows of a Select query, read as text, into matches.
// Scan each row into Dest, then call Match.
type Scanner struct {
	kws  []string
	vals []string
	// Dest are the scan destinations of a row, one per keyword.
	Dest []any
	// multi: a column kept on the level below, a list to sort.
	multi    []bool
	seqStart int // the first returned sequence (they come last)
}

// Scanner is a Scanner of the rows of a query whose keywords Select
// returned as kws.
func (d *Dialect) Scanner(kws []string) *Scanner {
	s := &Scanner{kws: kws, vals: make([]string, len(kws)), Dest: make([]any, len(kws)),
		multi: make([]bool, len(kws)), seqStart: len(kws)}
	for i, kw := range kws {
		c, ok := d.Columns[kw]
		if !ok && s.seqStart == len(kws) {
			s.seqStart = i // not a column: a returned sequence
		}
		s.Dest[i] = &s.vals[i]
		s.multi[i] = ok && c.In != ""
	}
	return s
}

// Match is the row last scanned: a list's values sorted and joined with
// '\', a returned sequence without items empty.
func (s *Scanner) Match() store.Match {
	m := make(store.Match, len(s.kws))
	for i, kw := range s.kws {
		v := s.vals[i]
		if i >= s.seqStart && v == "[]" {
			v = ""
		}
		if s.multi[i] && v != "" {
			parts := strings.Split(v, ",")
			slices.Sort(parts)
			v = strings.Join(parts, `\`)
		}
		m[kw] = v
	}
	return m
}
