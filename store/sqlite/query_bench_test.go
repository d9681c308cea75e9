package sqlite

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
)

// Query benchmarks at scale on synthetic indexes (BuildSynthetic).
//
//	go test ./store/sqlite -run '^$' -bench Query                      # 10k
//	WARD_BENCH_1M=1 go test ./store/sqlite -run '^$' -bench 'Query|PutAtScale' -timeout 30m
//
// The indexes are built once into $WARD_BENCH_DIR (default the system
// temporary directory) as ward-synth-<n>.db and reused while their
// instance count is right; delete them to rebuild.

func benchSizes() []int {
	if os.Getenv("WARD_BENCH_1M") == "1" {
		return []int{10_000, 1_000_000}
	}
	return []int{10_000}
}

// synthDB returns the path of a synthetic index of n instances, building it
// when missing.
func synthDB(b *testing.B, n int) string {
	b.Helper()
	dir := os.Getenv("WARD_BENCH_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("ward-synth-%d.db", n))
	ctx := context.Background()
	if db, err := Open(ctx, path); err == nil {
		c, err := db.CountInstances(ctx)
		db.Close()
		if err == nil && c == int64(n) {
			return path
		}
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
	start := time.Now()
	if err := BuildSynthetic(ctx, path, n, 1); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d instances in %s: %s", n, time.Since(start).Round(time.Millisecond), path)
	return path
}

func BenchmarkQuery(b *testing.B) {
	ctx := context.Background()
	for _, n := range benchSizes() {
		path := synthDB(b, n)
		db, err := Open(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		// Pick targets from the middle of the data.
		var pid, studyUID string
		if err := db.rdb.QueryRowContext(ctx, `SELECT p.patient_id, st.study_instance_uid FROM study st
			JOIN patient p ON p.pk = st.patient_fk WHERE st.pk = (SELECT max(pk) / 2 FROM study)`).Scan(&pid, &studyUID); err != nil {
			b.Fatal(err)
		}
		ret := []string{"PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "ModalitiesInStudy",
			"NumberOfStudyRelatedInstances", "AccessionNumber", "StudyDescription"}
		cases := []struct {
			name string
			q    store.Query
		}{
			{"STUDY_by_PatientID", store.Query{Level: store.LevelStudy, Return: ret,
				Keys: []store.Key{{Attribute: "PatientID", Kind: store.MatchSingle, Value: pid}}}},
			{"STUDY_by_PatientName_prefix", store.Query{Level: store.LevelStudy, Return: ret,
				Keys: []store.Key{{Attribute: "PatientName", Kind: store.MatchWildcard, Value: "J*"}}}},
			{"STUDY_by_StudyDate_quarter", store.Query{Level: store.LevelStudy, Return: ret,
				Keys: []store.Key{{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "20200101", Hi: "20200331"}}}},
			{"SERIES_in_study", store.Query{Level: store.LevelSeries,
				Keys: []store.Key{{Attribute: "StudyInstanceUID", Kind: store.MatchSingle, Value: studyUID}}}},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				matches := 0
				for b.Loop() {
					q := c.q
					q.Limit = 1001
					matches = 0
					if err := db.Query(ctx, &q, func(store.Match) error { matches++; return nil }); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(matches), "matches")
			})
		}
		db.Close()
	}
}

// BenchmarkPutAtScale measures Put (one instance per transaction, fsync
// included) into an empty index and into a copy of the synthetic 1M index
// (WARD_BENCH_1M=1), to show ingest does not slow down as the index grows.
func BenchmarkPutAtScale(b *testing.B) {
	ctx := context.Background()
	sizes := []int{0}
	if os.Getenv("WARD_BENCH_1M") == "1" {
		sizes = append(sizes, 1_000_000)
	}
	var seq atomic.Int64
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "ward.db")
			if n > 0 {
				if err := copyFile(synthDB(b, n), path); err != nil {
					b.Fatal(err)
				}
			}
			db, err := Open(ctx, path)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			for b.Loop() {
				i := int(seq.Add(1))
				// New instances in new and existing-size series, as a
				// modality sends them: 100 per series, 3 series per study.
				in := storetest.Sample(i, i/300, i/100)
				if _, err := db.Put(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
