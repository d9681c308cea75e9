package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/sqlmatch"
	"github.com/ward-pacs/ward/store/storetest"
)

// planRows is how many rows each level's table holds for TestQueryPlans:
// enough that the planner reads a table through an index only when that
// is cheaper than reading it whole, as in an archive.
const planRows = 20000

// loadPlanData fills the tables with planRows patients, studies, series
// and instances (one of each per patient, in a shape like an archive's:
// 600 surnames, ten years of dates, four modalities), a procedure code
// per study and a requested procedure per series, then analyses them.
func loadPlanData(t *testing.T, db *DB) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO patient (pk, patient_id, issuer_of_patient_id, patient_name, patient_name_norm, patient_birth_date, patient_sex)
SELECT g, 'PID' || g, '', 'Name' || (g % 600) || '^Given' || (g % 37), upper('Name' || (g % 600) || '^Given' || (g % 37)),
	to_char(date '1930-01-01' + (g % 25000), 'YYYYMMDD'), CASE g % 2 WHEN 0 THEN 'F' ELSE 'M' END
FROM generate_series(1, $1) g`,
		`INSERT INTO study (pk, patient_fk, study_instance_uid, study_date, study_time, accession_number, study_id,
	study_description, referring_physician_name, referring_physician_name_norm)
SELECT g, g, '1.2.3.1.' || g, to_char(date '2015-01-01' + (g % 3650), 'YYYYMMDD'), lpad(((g * 7) % 24)::text, 2, '0') || '0000',
	'ACC' || g, g::text, 'Study ' || (g % 50), 'Ref' || (g % 300) || '^Doc', upper('Ref' || (g % 300) || '^Doc')
FROM generate_series(1, $1) g`,
		`INSERT INTO series (pk, study_fk, series_instance_uid, modality, series_number, series_description, series_date,
	series_time, body_part_examined, performed_procedure_step_start_date)
SELECT g, g, '1.2.3.2.' || g, (ARRAY['CT','MR','CR','US'])[1 + g % 4], '1', 'Series', '', '', 'CHEST', ''
FROM generate_series(1, $1) g`,
		`INSERT INTO instance (pk, series_fk, sop_instance_uid, sop_class_uid, transfer_syntax_uid, instance_number,
	content_date, content_time, number_of_frames, pixel_rows, pixel_columns, specific_character_set, charset_unsupported,
	source_aet, source_addr, received_at, blob_key, size)
SELECT g, g, '1.2.3.3.' || g, '1.2.840.10008.5.1.4.1.1.' || (g % 4), '1.2.840.10008.1.2.1', '1', '', '', '1', 512, 512,
	'ISO_IR 192', false, 'SYNTH', '', NULL, 'k' || g, 1000
FROM generate_series(1, $1) g`,
		`INSERT INTO sequence_value (level, owner_fk, attribute, item, keyword, value)
SELECT 1, g, 'ProcedureCodeSequence', 0, k, CASE k WHEN 'CodeValue' THEN 'P' || g ELSE 'LOCAL' END
FROM generate_series(1, $1) g, unnest(ARRAY['CodeValue', 'CodingSchemeDesignator']) k`,
		`INSERT INTO instance_metadata (instance_fk, metadata)
SELECT g, convert_to('{"00080018":{"vr":"UI","Value":["1.2.3.3.' || g || '"]}}', 'UTF8') FROM generate_series(1, $1) g`,
		`INSERT INTO sequence_value (level, owner_fk, attribute, item, keyword, value)
SELECT 2, g, 'RequestAttributesSequence', 0, 'RequestedProcedureID', 'RP' || g FROM generate_series(1, $1) g`,
	} {
		if _, err := db.pool.Exec(ctx, q, planRows); err != nil {
			t.Fatalf("%v: %s", err, q)
		}
	}
	for _, tb := range synthTables {
		if _, err := db.pool.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, 'pk'), $2)`, tb, planRows); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		t.Fatal(err)
	}
}

// TestQueryPlans checks that the common queries read the tables through
// indexes: no node of their plans is a sequential scan of a table, on
// tables of planRows rows, analysed: in the plan for the values given
// (a custom plan, which is what queries run with: queryMode), and for the
// statements pgx caches, in the plan PostgreSQL may cache for any values
// (a generic plan) too.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	defer db.Close()
	loadPlanData(t, db)
	// A stored instance through Put, too (sequences, a second series).
	if _, err := db.Put(ctx, storetest.Sample(1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	single := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchSingle, Value: v} }
	wild := func(kw, v string) store.Key { return store.Key{Attribute: kw, Kind: store.MatchWildcard, Value: v} }
	for _, c := range []struct {
		name string
		q    store.Query
	}{
		{"STUDY by PatientID", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientID", "PID1")}}},
		{"PATIENT by PatientID", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{single("PatientID", "PID1")}}},
		{"STUDY by PatientName prefix", store.Query{Level: store.LevelStudy, Keys: []store.Key{wild("PatientName", "NAME17^*")}}},
		{"STUDY by PatientName prefix case-sensitive", store.Query{Level: store.LevelStudy, PNCaseSensitive: true, Keys: []store.Key{wild("PatientName", "Name17^*")}}},
		{"PATIENT by PatientName prefix", store.Query{Level: store.LevelPatient, PatientRoot: true, Keys: []store.Key{wild("PatientName", "NAME17^G*")}}},
		{"STUDY by PatientName exact", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("PatientName", "Name17^Given17")}}},
		{"STUDY by StudyDate range", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20200107"}}}},
		{"STUDY by StudyDate open range", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20241225"}}}},
		{"STUDY by StudyDate and time", store.Query{Level: store.LevelStudy, Keys: []store.Key{
			{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20200107"},
			{Attribute: "StudyTime", Kind: store.MatchRange, Lo: "0800", Hi: "1200"}}}},
		{"STUDY by StudyInstanceUID", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("StudyInstanceUID", "1.2.3.1.77")}}},
		{"STUDY by StudyInstanceUID list", store.Query{Level: store.LevelStudy, Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchList, Values: []string{"1.2.3.1.77", "1.2.3.1.78"}}}}},
		{"STUDY by AccessionNumber", store.Query{Level: store.LevelStudy, Keys: []store.Key{single("AccessionNumber", "ACC77")}}},
		{"STUDY by ModalitiesInStudy and date", store.Query{Level: store.LevelStudy, Return: []string{"ModalitiesInStudy"}, Keys: []store.Key{
			single("ModalitiesInStudy", "CT"),
			{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20200107"}}}},
		{"SERIES within a study", store.Query{Level: store.LevelSeries, Keys: []store.Key{single("StudyInstanceUID", "1.2.3.1.77")}}},
		{"SERIES within a study, patient root", store.Query{Level: store.LevelSeries, PatientRoot: true, Keys: []store.Key{
			single("PatientID", "PID77"), single("StudyInstanceUID", "1.2.3.1.77")}}},
		{"IMAGE within a series", store.Query{Level: store.LevelImage, Keys: []store.Key{
			single("StudyInstanceUID", "1.2.3.1.77"), single("SeriesInstanceUID", "1.2.3.2.77")}}},
		{"STUDY by ProcedureCodeSequence code", store.Query{Level: store.LevelStudy, ReturnSequences: store.DefaultSequences(), Keys: []store.Key{
			{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: []store.Key{single("CodeValue", "P77")}}}}},
		{"STUDY by ProcedureCodeSequence code and scheme", store.Query{Level: store.LevelStudy, Keys: []store.Key{
			{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: []store.Key{
				{Attribute: "CodingSchemeDesignator", Kind: store.MatchEmpty}, wild("CodeValue", "P77*"), single("CodingSchemeDesignator", "LOCAL")}}}}},
		{"SERIES by RequestAttributesSequence within a study", store.Query{Level: store.LevelSeries, ReturnSequences: store.DefaultSequences(), Keys: []store.Key{
			single("StudyInstanceUID", "1.2.3.1.77"),
			{Attribute: "RequestAttributesSequence", Kind: store.MatchSequence, Level: store.LevelSeries, Items: []store.Key{single("RequestedProcedureID", "RP77")}}}}},
		{"IMAGE by SOPInstanceUID", store.Query{Level: store.LevelImage, Keys: []store.Key{single("SOPInstanceUID", "1.2.3.3.77")}}},
		{"STUDY by PatientID, a page", store.Query{Level: store.LevelStudy, Limit: 10, Offset: 10, Keys: []store.Key{single("PatientID", "PID1")}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := c.q
			_, query, args, err := selectQuery(&q)
			if err != nil {
				t.Fatal(err)
			}
			db.checkPlan(t, "Query", query, args, false)
			if strings.Contains(c.name, "Sequence") {
				if plan := db.plan(t, query, args, false); !strings.Contains(plan, "sequence_value_match_idx") {
					t.Errorf("a sequence key does not search sequence_value_match_idx: %s", plan)
				}
			}
			query, args, err = instancesSeries(&q)
			if err != nil {
				t.Fatal(err)
			}
			db.checkPlan(t, "Instances series", query, args, false)
			query, args, err = instancesQuery(&q, []int64{77, 78}, sqlmatch.Position{77, 77, 3, 7700}, instancesPage)
			if err != nil {
				t.Fatal(err)
			}
			db.checkPlan(t, "Instances page", query, args, false)
		})
	}
	// And the writer's and the metadata's reads.
	for _, c := range []struct {
		what, sql string
		args      []any
	}{
		{"Get", getSQL + `i.sop_instance_uid = $1`, []any{"1.2.3.3.77"}},
		{"InstanceByBlob", getSQL + `i.blob_key = $1`, []any{"k77"}},
		{"BlobKeysWithPrefix", `SELECT blob_key FROM instance WHERE blob_key >= $1 AND blob_key < $2 ORDER BY blob_key`, []any{"k7", "k8"}},
		{"find series", sqlFindSeries, []any{"1.2.3.2.77"}},
		{"find patient", sqlFindPatient, []any{"PID77", ""}},
		{"metadata", `SELECT instance_fk, metadata FROM instance_metadata WHERE instance_fk = ANY ($1)`, []any{[]int64{1, 2, 3}}},
		{"empty series", `SELECT 1 FROM series WHERE pk = $1 AND NOT EXISTS (SELECT 1 FROM instance WHERE series_fk = $1)`, []any{int64(77)}},
		{"empty study", `SELECT 1 FROM study WHERE pk = $1 AND NOT EXISTS (SELECT 1 FROM series WHERE study_fk = $1)`, []any{int64(77)}},
		{"empty patient", `SELECT 1 FROM patient WHERE pk = $1 AND NOT EXISTS (SELECT 1 FROM study WHERE patient_fk = $1)`, []any{int64(77)}},
	} {
		t.Run(c.what, func(t *testing.T) { db.checkPlan(t, c.what, c.sql, c.args, true) })
	}
}

// checkPlan fails the test if the custom plan of query reads a table
// sequentially, or, with cached, the generic plan. The queries of Query
// and Instances are planned for their values each time (queryMode); the
// other statements are prepared once per connection, and PostgreSQL may
// cache a generic plan for them.
func (db *DB) checkPlan(t *testing.T, what, query string, args []any, cached bool) {
	t.Helper()
	for _, generic := range []bool{false, true} {
		if generic && !cached {
			continue
		}
		plan := db.plan(t, query, args, generic)
		var root []struct {
			Plan planNode `json:"Plan"`
		}
		if err := json.Unmarshal([]byte(plan), &root); err != nil || len(root) != 1 {
			t.Fatalf("%s: plan %q: %v", what, plan, err)
		}
		if scans := root[0].Plan.seqScans(); len(scans) > 0 {
			t.Errorf("%s (generic plan %v) reads %v sequentially:\n%s\nsql: %s", what, generic, scans, plan, query)
		}
	}
}

type planNode struct {
	NodeType string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Plans    []planNode `json:"Plans"`
}

func (n *planNode) seqScans() []string {
	var out []string
	if n.NodeType == "Seq Scan" {
		out = append(out, n.Relation)
	}
	for i := range n.Plans {
		out = append(out, n.Plans[i].seqScans()...)
	}
	return out
}

// plan returns the JSON plan of query for args: custom (planned for the
// values) or generic (the plan PostgreSQL may cache for any values, as
// it does for a statement pgx prepared once it has run five times).
func (db *DB) plan(t *testing.T, query string, args []any, generic bool) string {
	t.Helper()
	ctx := context.Background()
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	mode := "force_custom_plan"
	if generic {
		mode = "force_generic_plan"
	}
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET plan_cache_mode")
	if _, err := conn.Exec(ctx, "PREPARE plan_q AS "+query); err != nil {
		t.Fatalf("prepare: %v\n%s", err, query)
	}
	defer conn.Exec(ctx, "DEALLOCATE plan_q")
	lits := make([]string, len(args))
	for i, a := range args {
		lits[i] = literal(a)
	}
	var plan string
	exec := "EXPLAIN (FORMAT JSON) EXECUTE plan_q"
	if len(lits) > 0 {
		exec += "(" + strings.Join(lits, ", ") + ")"
	}
	if err := conn.QueryRow(ctx, exec).Scan(&plan); err != nil {
		t.Fatalf("explain: %v\n%s", err, exec)
	}
	return plan
}

// literal is a as an SQL literal (tests: the values they give).
func literal(a any) string {
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	switch v := a.(type) {
	case string:
		return quote(v)
	case int16:
		return strconv.Itoa(int(v))
	case int64:
		return strconv.FormatInt(v, 10)
	case *int64:
		if v == nil {
			return "NULL"
		}
		return strconv.FormatInt(*v, 10)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = quote(s)
		}
		return "ARRAY[" + strings.Join(q, ",") + "]::text[]"
	case []int64:
		q := make([]string, len(v))
		for i, n := range v {
			q[i] = strconv.FormatInt(n, 10)
		}
		return "ARRAY[" + strings.Join(q, ",") + "]::bigint[]"
	}
	panic(fmt.Sprintf("literal of %T", a))
}
