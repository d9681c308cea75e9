package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/sqlmatch"
)

// Query/retrieve (store.Querier). Keys become conditions through
// store/sqlmatch, shared with the SQLite index, so that both match alike
// (and pass the same conformance suite); what PostgreSQL spells its own
// way is its dialect:
//   - a value is matched as Put stores it (textOf: valid UTF-8, no NUL);
//   - wildcard: LIKE with '%', '_' and '\' escaped, '*' and '?' turned
//     into '%' and '_'; with the prefix bounds PostgreSQL searches the
//     column's B-tree index (collation "C") whatever plan it caches for
//     the bound pattern;
//   - list of UIDs: = ANY (array);
//   - the upper bound of a prefix stays valid UTF-8 (a text parameter
//     must be).

// column is one attribute the index holds.
type column = sqlmatch.Column

// dialect is PostgreSQL's spelling of the conditions sqlmatch builds.
var dialect = sqlmatch.Dialect{
	Name:    "postgres",
	Columns: columns,
	Text:    textOf,
	Pattern: func(col, pat string) (string, any) { return col + " LIKE ?", likeEscape(pat) },
	List: func(col string, vals []string) (string, []any) {
		return col + " = ANY (?::text[])", []any{vals}
	},
	NextPrefix: sqlmatch.NextPrefixUTF8,
	Level:      func(l store.Level) any { return int16(l) },
	True:       "TRUE",

	SequenceExpr: sequenceExpr,
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

// where builds the WHERE clause of q (empty when q has no conditions),
// with '?' placeholders (number makes them $n).
func where(q *store.Query) (string, []any, error) { return sqlmatch.Where(&dialect, q) }

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
	"PatientName":                     {Level: store.LevelPatient, Expr: "p.patient_name", Norm: "p.patient_name_norm", VR: "PN"},
	"PatientID":                       {Level: store.LevelPatient, Expr: "p.patient_id", VR: "LO"},
	"IssuerOfPatientID":               {Level: store.LevelPatient, Expr: "p.issuer_of_patient_id", VR: "LO"},
	"PatientBirthDate":                {Level: store.LevelPatient, Expr: "p.patient_birth_date", VR: "DA"},
	"PatientSex":                      {Level: store.LevelPatient, Expr: "p.patient_sex", VR: "CS"},
	"NumberOfPatientRelatedStudies":   {Level: store.LevelPatient, Expr: patientStudies, VR: "IS", NoMatch: true, Costly: true},
	"NumberOfPatientRelatedSeries":    {Level: store.LevelPatient, Expr: patientSeries, VR: "IS", NoMatch: true, Costly: true},
	"NumberOfPatientRelatedInstances": {Level: store.LevelPatient, Expr: patientInstances, VR: "IS", NoMatch: true, Costly: true},

	// Study
	"StudyInstanceUID":              {Level: store.LevelStudy, Expr: "st.study_instance_uid", VR: "UI"},
	"StudyDate":                     {Level: store.LevelStudy, Expr: "st.study_date", VR: "DA"},
	"StudyTime":                     {Level: store.LevelStudy, Expr: "st.study_time", VR: "TM"},
	"AccessionNumber":               {Level: store.LevelStudy, Expr: "st.accession_number", VR: "SH"},
	"StudyID":                       {Level: store.LevelStudy, Expr: "st.study_id", VR: "SH"},
	"StudyDescription":              {Level: store.LevelStudy, Expr: "st.study_description", VR: "LO"},
	"ReferringPhysicianName":        {Level: store.LevelStudy, Expr: "st.referring_physician_name", Norm: "st.referring_physician_name_norm", VR: "PN"},
	"NumberOfStudyRelatedSeries":    {Level: store.LevelStudy, Expr: studySeries, VR: "IS", NoMatch: true, Costly: true},
	"NumberOfStudyRelatedInstances": {Level: store.LevelStudy, Expr: studyInstances, VR: "IS", NoMatch: true, Costly: true},
	"ModalitiesInStudy": {Level: store.LevelStudy, VR: "CS", Costly: true,
		Expr: "(SELECT coalesce(string_agg(DISTINCT x.modality, ','), '') FROM series x WHERE x.study_fk = st.pk AND x.modality <> '')",
		In:   "st.pk IN (SELECT x.study_fk FROM series x WHERE %s)", Col: "x.modality"},
	"SOPClassesInStudy": {Level: store.LevelStudy, VR: "UI", Costly: true,
		Expr: "(SELECT coalesce(string_agg(DISTINCT y.sop_class_uid, ','), '') FROM series x JOIN instance y ON y.series_fk = x.pk WHERE x.study_fk = st.pk)",
		In:   "st.pk IN (SELECT x.study_fk FROM instance y JOIN series x ON x.pk = y.series_fk WHERE %s)", Col: "y.sop_class_uid"},

	// Series
	"SeriesInstanceUID":               {Level: store.LevelSeries, Expr: "se.series_instance_uid", VR: "UI"},
	"Modality":                        {Level: store.LevelSeries, Expr: "se.modality", VR: "CS"},
	"SeriesNumber":                    {Level: store.LevelSeries, Expr: "se.series_number", VR: "IS"},
	"SeriesDescription":               {Level: store.LevelSeries, Expr: "se.series_description", VR: "LO"},
	"SeriesDate":                      {Level: store.LevelSeries, Expr: "se.series_date", VR: "DA"},
	"SeriesTime":                      {Level: store.LevelSeries, Expr: "se.series_time", VR: "TM"},
	"BodyPartExamined":                {Level: store.LevelSeries, Expr: "se.body_part_examined", VR: "CS"},
	"PerformedProcedureStepStartDate": {Level: store.LevelSeries, Expr: "se.performed_procedure_step_start_date", VR: "DA"},
	"NumberOfSeriesRelatedInstances":  {Level: store.LevelSeries, Expr: seriesInstances, VR: "IS", NoMatch: true, Costly: true},

	// Image
	"SOPInstanceUID":             {Level: store.LevelImage, Expr: "i.sop_instance_uid", VR: "UI"},
	"SOPClassUID":                {Level: store.LevelImage, Expr: "i.sop_class_uid", VR: "UI"},
	"InstanceNumber":             {Level: store.LevelImage, Expr: "i.instance_number", VR: "IS"},
	"ContentDate":                {Level: store.LevelImage, Expr: "i.content_date", VR: "DA"},
	"ContentTime":                {Level: store.LevelImage, Expr: "i.content_time", VR: "TM"},
	"NumberOfFrames":             {Level: store.LevelImage, Expr: "i.number_of_frames", VR: "IS"},
	"Rows":                       {Level: store.LevelImage, Expr: "CASE i.pixel_rows WHEN 0 THEN '' ELSE i.pixel_rows::text END", VR: "US", NoMatch: true},
	"Columns":                    {Level: store.LevelImage, Expr: "CASE i.pixel_columns WHEN 0 THEN '' ELSE i.pixel_columns::text END", VR: "US", NoMatch: true},
	"AvailableTransferSyntaxUID": {Level: store.LevelImage, Expr: "i.transfer_syntax_uid", VR: "UI"},
}

// Attributes returns the keywords the index can return at each level
// (index = store.Level), and whether each can be a matching key.
func Attributes() (byLevel [4][]string, matchable map[string]bool) { return dialect.Attributes() }

var (
	_ store.Querier         = (*DB)(nil)
	_ store.KeyMatcher      = (*DB)(nil)
	_ store.SequenceIndexer = (*DB)(nil)
)

// IndexesSequences implements store.SequenceIndexer: any sequence, kept
// in the sequence_value table.
func (db *DB) IndexesSequences() bool { return true }

// CanMatch implements store.KeyMatcher.
func (db *DB) CanMatch(attribute string) bool { return dialect.CanMatch(attribute) }

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

// sequenceExpr returns the expression of a returned sequence: a JSON
// array of the items in order, each an object of keyword -> value; ”
// when there is none. Its arguments are the level and the attribute.
func sequenceExpr(sp store.SequenceSpec) string {
	return "(SELECT coalesce(json_agg(q.o ORDER BY q.item)::text, '') FROM (SELECT v.item, json_object_agg(v.keyword, v.value) AS o " +
		"FROM sequence_value v WHERE v.level = ? AND v.owner_fk = " + sqlmatch.Owner(sp.Level) +
		" AND v.attribute = ? GROUP BY v.item) q)"
}

// selectQuery builds the SELECT of Query: the columns returned (keywords)
// and the SQL with its arguments.
func selectQuery(q *store.Query) (kws []string, query string, args []any, err error) {
	kws, exprs, w, args, err := sqlmatch.Select(&dialect, q)
	if err != nil {
		return nil, "", nil, err
	}
	// In key order: rows stored later come later, so that paging with
	// offset stays exact while objects arrive.
	query = "SELECT " + strings.Join(exprs, ", ") + " FROM " + sqlmatch.From(q.Level) + w + " ORDER BY " + sqlmatch.LevelAlias[q.Level] + ".pk"
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
	sc := dialect.Scanner(kws)
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
			if err := rows.Scan(sc.Dest...); err != nil {
				return err
			}
			delivered = true
			if err := fn(sc.Match()); err != nil {
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

// instanceNumber is the instance number as instances are ordered by it:
// its leading digits as an integer, 0 without (the SQLite index's CAST).
const instanceNumber = `coalesce(substring(i.instance_number from '^\s*([-+]?[0-9]{1,18})')::bigint, 0)`

// instanceOrder orders instances by study, series and instance number,
// then key.
const instanceOrder = `
ORDER BY st.pk, se.pk, ` + instanceNumber + `, i.pk`

// instancesPage is how many instances Instances reads per query.
var instancesPage = 2000

// instancesSeries builds the query of the series keys, with their
// study's, that have instances matching q, in the order of Instances.
func instancesSeries(q *store.Query) (string, []any, error) {
	w, args, err := where(q)
	if err != nil {
		return "", nil, err
	}
	return number(`SELECT DISTINCT st.pk, se.pk FROM ` + sqlmatch.From(store.LevelImage) + w + `
ORDER BY st.pk, se.pk`), args, nil
}

// instancesQuery builds the SELECT of one page of Instances: up to limit
// instances of the series keys given that come after the position
// (study key, series key, instance number, instance key) in the order of
// Instances.
func instancesQuery(q *store.Query, series []int64, after sqlmatch.Position, limit int) (string, []any, error) {
	w, args, err := where(q)
	if err != nil {
		return "", nil, err
	}
	if w == "" {
		w = " WHERE "
	} else {
		w += " AND "
	}
	w += "se.pk = ANY (?::bigint[]) AND (st.pk, se.pk, " + instanceNumber + ", i.pk) > (?::bigint, ?::bigint, ?::bigint, ?::bigint)"
	args = append(args, series, after[0], after[1], after[2], after[3])
	query := `SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.instance_number,
	se.series_instance_uid, se.modality, st.study_instance_uid, p.patient_id, p.issuer_of_patient_id,
	i.blob_key, i.size, st.pk, se.pk, ` + instanceNumber + `, i.pk
FROM ` + sqlmatch.From(store.LevelImage) + w + instanceOrder + `
LIMIT ?::bigint`
	return number(query), append(args, int64(limit)), nil
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
//
// The instances are read in pages of instancesPage (sqlmatch.Paging,
// which says what a walk sees of concurrent changes), each page its own
// short read: memory stays bounded and no connection is held while fn
// runs. Each object is whole: the blob key read with its row names the
// complete object (blobs are write-once and deleted only after their
// rows).
func (db *DB) Instances(ctx context.Context, q *store.Query, fn func(*store.Instance) error) error {
	sq, sargs, err := instancesSeries(q)
	if err != nil {
		return err
	}
	var series []int64 // series keys, each after its study key
	err = db.read(ctx, func() error {
		series = series[:0]
		rows, _ := db.pool.Query(ctx, sq, append([]any{queryMode}, sargs...)...)
		var st, se int64
		_, err := pgx.ForEachRow(rows, []any{&st, &se}, func() error {
			series = append(series, st, se)
			return nil
		})
		return err
	})
	if err != nil {
		return db.fail("instances", err)
	}
	p := sqlmatch.Paging{PageSize: instancesPage, Offset: q.Offset, Limit: q.Limit}
	p.Read = func(keys []int64, after sqlmatch.Position, n int) ([]sqlmatch.Row, error) {
		query, args, err := instancesQuery(q, keys, after, n)
		if err != nil {
			return nil, err
		}
		var page []sqlmatch.Row
		err = db.read(ctx, func() (err error) {
			rows, _ := db.pool.Query(ctx, query, append([]any{queryMode}, args...)...)
			page, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (sqlmatch.Row, error) {
				var x sqlmatch.Row
				in := &x.Instance
				err := r.Scan(&in.SOPInstanceUID, &in.SOPClassUID, &in.TransferSyntaxUID, &in.InstanceNumber,
					&in.SeriesInstanceUID, &in.Modality, &in.StudyInstanceUID, &in.PatientID, &in.IssuerOfPatientID,
					&in.BlobKey, &in.Size, &x.Pos[0], &x.Pos[1], &x.Pos[2], &x.Pos[3])
				return x, err
			})
			return err
		})
		if err != nil {
			return nil, db.fail("instances", err)
		}
		return page, nil
	}
	if q.WithMetadata {
		p.Metadata = func(rows []sqlmatch.Row) error { return db.metadata(ctx, rows) }
		p.MetadataBatch = metadataBatch
	}
	return p.Walk(series, fn)
}

// metadata sets the kept metadata of rows, read in one query.
func (db *DB) metadata(ctx context.Context, rows []sqlmatch.Row) error {
	pks := make([]int64, len(rows))
	for i := range rows {
		pks[i] = rows[i].Pos[3]
	}
	byPK := make(map[int64][]byte, len(rows))
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
	for i := range rows {
		rows[i].Instance.Metadata = byPK[rows[i].Pos[3]]
	}
	return nil
}
