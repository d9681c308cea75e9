package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/sqlmatch"
)

// Query/retrieve (store.Querier). Keys become conditions through
// store/sqlmatch, shared with the PostgreSQL index; what SQLite spells
// its own way is its dialect:
//   - wildcard: GLOB with '[' and ']' escaped ('*' and '?' keep their
//     meaning);
//   - list of UIDs: IN (?, ...);
//   - the upper bound of a prefix: the last byte incremented (BINARY
//     collation, any bytes).

// column is one attribute the index holds.
type column = sqlmatch.Column

// dialect is SQLite's spelling of the conditions sqlmatch builds.
var dialect = sqlmatch.Dialect{
	Name:    "sqlite",
	Columns: columns,
	Pattern: func(col, pat string) (string, any) { return col + " GLOB ?", globEscape(pat) },
	List: func(col string, vals []string) (string, []any) {
		args := make([]any, len(vals))
		for i, v := range vals {
			args[i] = v
		}
		return col + " IN (?" + strings.Repeat(", ?", len(vals)-1) + ")", args
	},
	NextPrefix: sqlmatch.NextPrefixBytes,
	Level:      func(l store.Level) any { return int(l) },
	True:       "1",

	SequenceExpr: sequenceExpr,
}

// globEscape turns a DICOM wildcard pattern into a GLOB pattern: '*' and
// '?' keep their meaning, '[' and ']' become literal.
func globEscape(p string) string {
	var sb strings.Builder
	for _, r := range p {
		switch r {
		case '[':
			sb.WriteString("[[]")
		case ']':
			sb.WriteString("[]]")
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// where builds the WHERE clause of q (empty when q has no conditions).
func where(q *store.Query) (string, []any, error) { return sqlmatch.Where(&dialect, q) }

var columns = map[string]column{
	// Patient
	"PatientName":                     {Level: store.LevelPatient, Expr: "p.patient_name", Norm: "p.patient_name_norm", VR: "PN"},
	"PatientID":                       {Level: store.LevelPatient, Expr: "p.patient_id", VR: "LO"},
	"IssuerOfPatientID":               {Level: store.LevelPatient, Expr: "p.issuer_of_patient_id", VR: "LO"},
	"PatientBirthDate":                {Level: store.LevelPatient, Expr: "p.patient_birth_date", VR: "DA"},
	"PatientSex":                      {Level: store.LevelPatient, Expr: "p.patient_sex", VR: "CS"},
	"NumberOfPatientRelatedStudies":   {Level: store.LevelPatient, Expr: "CAST(p.num_studies AS TEXT)", VR: "IS", NoMatch: true},
	"NumberOfPatientRelatedSeries":    {Level: store.LevelPatient, Expr: "CAST(p.num_series AS TEXT)", VR: "IS", NoMatch: true},
	"NumberOfPatientRelatedInstances": {Level: store.LevelPatient, Expr: "CAST(p.num_instances AS TEXT)", VR: "IS", NoMatch: true},

	// Study
	"StudyInstanceUID":              {Level: store.LevelStudy, Expr: "st.study_instance_uid", VR: "UI"},
	"StudyDate":                     {Level: store.LevelStudy, Expr: "st.study_date", VR: "DA"},
	"StudyTime":                     {Level: store.LevelStudy, Expr: "st.study_time", VR: "TM"},
	"AccessionNumber":               {Level: store.LevelStudy, Expr: "st.accession_number", VR: "SH"},
	"StudyID":                       {Level: store.LevelStudy, Expr: "st.study_id", VR: "SH"},
	"StudyDescription":              {Level: store.LevelStudy, Expr: "st.study_description", VR: "LO"},
	"ReferringPhysicianName":        {Level: store.LevelStudy, Expr: "st.referring_physician_name", Norm: "st.referring_physician_name_norm", VR: "PN"},
	"NumberOfStudyRelatedSeries":    {Level: store.LevelStudy, Expr: "CAST(st.num_series AS TEXT)", VR: "IS", NoMatch: true},
	"NumberOfStudyRelatedInstances": {Level: store.LevelStudy, Expr: "CAST(st.num_instances AS TEXT)", VR: "IS", NoMatch: true},
	"ModalitiesInStudy": {Level: store.LevelStudy, VR: "CS", Costly: true,
		Expr: "(SELECT coalesce(group_concat(DISTINCT x.modality), '') FROM series x WHERE x.study_fk = st.pk AND x.modality <> '')",
		In:   "st.pk IN (SELECT x.study_fk FROM series x WHERE %s)", Col: "x.modality"},
	"SOPClassesInStudy": {Level: store.LevelStudy, VR: "UI", Costly: true,
		Expr: "(SELECT coalesce(group_concat(DISTINCT y.sop_class_uid), '') FROM series x JOIN instance y ON y.series_fk = x.pk WHERE x.study_fk = st.pk)",
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
	"NumberOfSeriesRelatedInstances":  {Level: store.LevelSeries, Expr: "CAST(se.num_instances AS TEXT)", VR: "IS", NoMatch: true},

	// Image
	"SOPInstanceUID":             {Level: store.LevelImage, Expr: "i.sop_instance_uid", VR: "UI"},
	"SOPClassUID":                {Level: store.LevelImage, Expr: "i.sop_class_uid", VR: "UI"},
	"InstanceNumber":             {Level: store.LevelImage, Expr: "i.instance_number", VR: "IS"},
	"ContentDate":                {Level: store.LevelImage, Expr: "i.content_date", VR: "DA"},
	"ContentTime":                {Level: store.LevelImage, Expr: "i.content_time", VR: "TM"},
	"NumberOfFrames":             {Level: store.LevelImage, Expr: "i.number_of_frames", VR: "IS"},
	"Rows":                       {Level: store.LevelImage, Expr: "CASE i.rows WHEN 0 THEN '' ELSE CAST(i.rows AS TEXT) END", VR: "US", NoMatch: true},
	"Columns":                    {Level: store.LevelImage, Expr: "CASE i.columns WHEN 0 THEN '' ELSE CAST(i.columns AS TEXT) END", VR: "US", NoMatch: true},
	"AvailableTransferSyntaxUID": {Level: store.LevelImage, Expr: "i.transfer_syntax_uid", VR: "UI"},
}

// Attributes returns the keywords the SQLite index can return at each
// level (index = store.Level), and whether each can be a matching key.
func Attributes() (byLevel [4][]string, matchable map[string]bool) { return dialect.Attributes() }

var (
	_ store.Querier         = (*DB)(nil)
	_ store.KeyMatcher      = (*DB)(nil)
	_ store.SequenceIndexer = (*DB)(nil)
)

// IndexesSequences implements store.SequenceIndexer: any sequence, kept in
// the sequence_value table (migration 4).
func (db *DB) IndexesSequences() bool { return true }

// sequenceExpr returns the expression of a returned sequence: a JSON array
// of the items of the owner row, each an object keyword -> value.
func sequenceExpr(sp store.SequenceSpec) string {
	return "(SELECT coalesce(json_group_array(json(o)), '[]') FROM (SELECT json_group_object(v.keyword, v.value) AS o " +
		"FROM sequence_value v WHERE v.level = ? AND v.owner_fk = " + sqlmatch.Owner(sp.Level) +
		" AND v.attribute = ? GROUP BY v.item ORDER BY v.item))"
}

// CanMatch implements store.KeyMatcher.
func (db *DB) CanMatch(attribute string) bool { return dialect.CanMatch(attribute) }

// selectQuery builds the SELECT of Query: the columns returned (keywords)
// and the SQL with its arguments.
func selectQuery(q *store.Query) (kws []string, query string, args []any, err error) {
	kws, exprs, w, args, err := sqlmatch.Select(&dialect, q)
	if err != nil {
		return nil, "", nil, err
	}
	// In key order: rows stored later come later, so that paging with
	// offset stays exact while objects arrive. Without keys the table is
	// scanned in that order (no sort); with keys, "+" keeps the order from
	// choosing the plan: the keys' index finds the matches, which are then
	// sorted.
	order := " ORDER BY " + sqlmatch.LevelAlias[q.Level] + ".pk"
	if w != "" {
		order = " ORDER BY +" + sqlmatch.LevelAlias[q.Level] + ".pk"
	}
	query = "SELECT " + strings.Join(exprs, ", ") + " FROM " + sqlmatch.From(q.Level) + w + order
	lim, limArgs := limitClause(q)
	return kws, query + lim, append(args, limArgs...), nil
}

// Query implements store.Querier. Matches come in the order they were
// first stored (by the level's key).
func (db *DB) Query(ctx context.Context, q *store.Query, fn func(store.Match) error) error {
	kws, query, args, err := selectQuery(q)
	if err != nil {
		return err
	}
	rows, err := db.queryCached(ctx, query, args)
	if err != nil {
		return fmt.Errorf("sqlite: query: %w", db.closedErr(err))
	}
	defer rows.Close()
	sc := dialect.Scanner(kws)
	for rows.Next() {
		if err := rows.Scan(sc.Dest...); err != nil {
			return fmt.Errorf("sqlite: query: %w", err)
		}
		if err := fn(sc.Match()); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: query: %w", db.closedErr(err))
	}
	return nil
}

// maxCachedStmts bounds the prepared query statements kept: queries of the
// same shape (the same keys and kinds of matching) share one.
const maxCachedStmts = 256

// queryCached runs a query through a prepared statement kept per SQL text,
// so a repeated query shape is not parsed and planned again.
func (db *DB) queryCached(ctx context.Context, query string, args []any) (*sql.Rows, error) {
	if v, ok := db.stmts.Load(query); ok {
		return v.(*sql.Stmt).QueryContext(ctx, args...)
	}
	if db.nstmts.Load() >= maxCachedStmts {
		return db.rdb.QueryContext(ctx, query, args...)
	}
	st, err := db.rdb.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := db.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		st = prev.(*sql.Stmt)
	} else {
		db.nstmts.Add(1)
	}
	return st.QueryContext(ctx, args...)
}

// instanceNumber is the instance number as instances are ordered by it.
const instanceNumber = `CAST(i.instance_number AS INTEGER)`

// instanceOrder orders instances by study, series and instance number,
// then key.
const instanceOrder = `
ORDER BY st.pk, se.pk, ` + instanceNumber + `, i.pk`

// instancesPage is how many instances Instances reads per query.
var instancesPage = 2000

// instancesSeries builds the query of the series keys, with their
// study's, of the instances matching q, in the order of Instances: one
// row per instance (with DISTINCT, SQLite's planner would scan the
// series table), made distinct as they are read.
func instancesSeries(q *store.Query) (string, []any, error) {
	w, args, err := where(q)
	if err != nil {
		return "", nil, err
	}
	// With keys, "+" keeps the order from choosing the plan (a scan of
	// the studies in key order): the keys' index finds the matches.
	order := " ORDER BY st.pk, se.pk"
	if w != "" {
		order = " ORDER BY +st.pk, +se.pk"
	}
	return `SELECT st.pk, se.pk FROM ` + sqlmatch.From(store.LevelImage) + w + order, args, nil
}

// instancesQuery builds the SELECT of one page of Instances: up to limit
// instances of the series keys given (one parameter, a JSON array, so
// that every page runs the one cached statement of its query's shape)
// that come after pos in the order of Instances.
func instancesQuery(q *store.Query, series []int64, pos sqlmatch.Position, limit int) (string, []any, error) {
	w, args, err := where(q)
	if err != nil {
		return "", nil, err
	}
	if w == "" {
		w = " WHERE "
	} else {
		w += " AND "
	}
	w += "se.pk IN (SELECT value FROM json_each(?)) AND (st.pk, se.pk, " + instanceNumber + ", i.pk) > (?, ?, ?, ?)"
	keys := make([]string, len(series))
	for i, k := range series {
		keys[i] = strconv.FormatInt(k, 10)
	}
	args = append(args, "["+strings.Join(keys, ",")+"]", pos[0], pos[1], pos[2], pos[3])
	query := `SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.instance_number,
	se.series_instance_uid, se.modality, st.study_instance_uid, p.patient_id, p.issuer_of_patient_id,
	i.blob_key, i.size, st.pk, se.pk, ` + instanceNumber + `, i.pk
FROM ` + sqlmatch.From(store.LevelImage) + w + instanceOrder + `
LIMIT ?`
	return query, append(args, limit), nil
}

// limitClause is the LIMIT/OFFSET of q ("" for neither) and its
// arguments. SQLite wants a LIMIT before an OFFSET: -1 is none. Both are
// parameters, so that a client paging through offsets reuses the one
// cached statement of its query's shape.
func limitClause(q *store.Query) (string, []any) {
	switch {
	case q.Offset > 0:
		limit := -1
		if q.Limit > 0 {
			limit = q.Limit
		}
		return " LIMIT ? OFFSET ?", []any{limit, q.Offset}
	case q.Limit > 0:
		return " LIMIT ?", []any{q.Limit}
	}
	return "", nil
}

// Instances implements store.Querier: the instances under the matches of q,
// ordered by study, series and instance number. Only the identifying and
// storage fields of each Instance are set (UIDs, transfer syntax, instance
// number, modality, patient ID and issuer, blob key and size), and the
// kept metadata when q.WithMetadata asks: read after each page's rows, by
// key, metadataBatch at a time (sorting the rows with the metadata would
// spill the sort to temporary files).
//
// The instances are read in pages of instancesPage (sqlmatch.Paging,
// which says what a walk sees of concurrent changes), each page its own
// read: memory stays bounded, and no read transaction stays open while
// fn runs (one would hold a connection and keep checkpoints from
// resetting the write-ahead log for the whole of a long C-MOVE).
func (db *DB) Instances(ctx context.Context, q *store.Query, fn func(*store.Instance) error) error {
	sq, sargs, err := instancesSeries(q)
	if err != nil {
		return err
	}
	rows, err := db.queryCached(ctx, sq, sargs)
	if err != nil {
		return fmt.Errorf("sqlite: instances: %w", db.closedErr(err))
	}
	var series []int64 // series keys, each after its study key
	for rows.Next() {
		var st, se int64
		if err := rows.Scan(&st, &se); err != nil {
			rows.Close()
			return fmt.Errorf("sqlite: instances: %w", err)
		}
		if n := len(series); n == 0 || series[n-1] != se || series[n-2] != st {
			series = append(series, st, se)
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("sqlite: instances: %w", db.closedErr(err))
	}
	p := sqlmatch.Paging{PageSize: instancesPage, Offset: q.Offset, Limit: q.Limit}
	p.Read = func(keys []int64, pos sqlmatch.Position, n int) ([]sqlmatch.Row, error) {
		query, args, err := instancesQuery(q, keys, pos, n)
		if err != nil {
			return nil, err
		}
		rows, err := db.queryCached(ctx, query, args)
		if err != nil {
			return nil, fmt.Errorf("sqlite: instances: %w", db.closedErr(err))
		}
		defer rows.Close()
		page := make([]sqlmatch.Row, 0, n)
		for rows.Next() {
			var x sqlmatch.Row
			in := &x.Instance
			if err := rows.Scan(&in.SOPInstanceUID, &in.SOPClassUID, &in.TransferSyntaxUID, &in.InstanceNumber,
				&in.SeriesInstanceUID, &in.Modality, &in.StudyInstanceUID, &in.PatientID, &in.IssuerOfPatientID,
				&in.BlobKey, &in.Size, &x.Pos[0], &x.Pos[1], &x.Pos[2], &x.Pos[3]); err != nil {
				return nil, fmt.Errorf("sqlite: instances: %w", err)
			}
			page = append(page, x)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("sqlite: instances: %w", db.closedErr(err))
		}
		return page, nil
	}
	if q.WithMetadata {
		p.Metadata = func(rows []sqlmatch.Row) error { return db.metadata(ctx, rows) }
		p.MetadataBatch = metadataBatch
	}
	return p.Walk(series, fn)
}

// metadataBatch is how many instances' kept metadata one query reads.
const metadataBatch = 256

// metadata sets the kept metadata of rows, read in one query.
func (db *DB) metadata(ctx context.Context, rows []sqlmatch.Row) error {
	pks := make([]any, len(rows))
	for i := range rows {
		pks[i] = rows[i].Pos[3]
	}
	byPK := make(map[int64][]byte, len(rows))
	mq := `SELECT instance_fk, metadata FROM instance_metadata WHERE instance_fk IN (?` +
		strings.Repeat(",?", len(rows)-1) + `)`
	mrows, err := db.queryCached(ctx, mq, pks)
	if err != nil {
		return fmt.Errorf("sqlite: instances: %w", db.closedErr(err))
	}
	defer mrows.Close()
	for mrows.Next() {
		var pk int64
		var b []byte
		if err := mrows.Scan(&pk, &b); err != nil {
			return fmt.Errorf("sqlite: instances: %w", err)
		}
		byPK[pk] = b
	}
	if err := mrows.Err(); err != nil {
		return fmt.Errorf("sqlite: instances: %w", db.closedErr(err))
	}
	for i := range rows {
		rows[i].Instance.Metadata = byPK[rows[i].Pos[3]]
	}
	return nil
}

// explain returns the EXPLAIN QUERY PLAN lines of a statement (tests).
func (db *DB) explain(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := db.rdb.QueryContext(ctx, "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			return nil, err
		}
		lines = append(lines, detail)
	}
	return lines, rows.Err()
}
