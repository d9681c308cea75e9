package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// openTest opens a new, empty index in a database of its own on the
// package's PostgreSQL cluster.
func openTest(t *testing.T) *DB {
	t.Helper()
	dsn := harness.StartPostgres(t).NewDatabase(t)
	db, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestConformance(t *testing.T) {
	open := func(t *testing.T) store.Index { return openTest(t) }
	t.Run("Index", func(t *testing.T) { storetest.TestIndex(t, open) })
	t.Run("Query", func(t *testing.T) { storetest.TestQuery(t, open) })
	t.Run("QuerySequences", func(t *testing.T) { storetest.TestQuerySequences(t, open) })
}

// TestMigrateConcurrently: nodes that start at once on a new database
// all open it; the migrations ran once, under the lock.
func TestMigrateConcurrently(t *testing.T) {
	ctx := context.Background()
	dsn := harness.StartPostgres(t).NewDatabase(t)
	const nodes = 8
	var wg sync.WaitGroup
	dbs := make([]*DB, nodes)
	errs := make([]error, nodes)
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dbs[i], errs[i] = Open(ctx, dsn)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		defer dbs[i].Close()
	}
	var n, max int
	if err := dbs[0].pool.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != SchemaVersion() || max != SchemaVersion() {
		t.Errorf("schema_migrations: %d rows up to %d, want %d", n, max, SchemaVersion())
	}
	// A database a newer Ward migrated is refused.
	if _, err := dbs[0].pool.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(ctx, dsn); !errors.Is(err, ErrSchemaTooNew) {
		if db != nil {
			db.Close()
		}
		t.Errorf("opening a newer schema: %v, want ErrSchemaTooNew", err)
	}
}

// TestSameInstanceTwoNodes: two nodes (each its own pool) storing the
// same SOP Instance UID at once, over and over, leave one row; every
// blob but the one it names is recorded for deletion, none twice, and
// each Put reports the key it replaced.
func TestSameInstanceTwoNodes(t *testing.T) {
	ctx := context.Background()
	dsn := harness.StartPostgres(t).NewDatabase(t)
	a, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const rounds = 40
	var mu sync.Mutex
	keys := map[string]bool{}
	replaced := map[string]int{}
	var wg sync.WaitGroup
	for _, node := range []*DB{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				in := storetest.Sample(1, 1, 1)
				if i%2 == 1 {
					in.SeriesInstanceUID = storetest.Sample(0, 2, 2).SeriesInstanceUID // moves between series
				}
				res, err := node.Put(ctx, in)
				if err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				mu.Lock()
				keys[in.BlobKey] = true
				if res.OldBlobKey != "" {
					replaced[res.OldBlobKey]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	got, err := a.Get(ctx, storetest.Sample(1, 1, 1).SOPInstanceUID)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Counts(ctx)
	if err != nil || c.Instances != 1 || c.Series != 1 || c.Studies != 1 || c.Patients != 1 {
		t.Errorf("counts %+v, %v: want one of each", c, err)
	}
	pend, err := a.PendingBlobDeletes(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for k := range keys {
		if k != got.BlobKey {
			want[k] = true
		}
	}
	if len(pend) != len(want) {
		t.Errorf("%d blobs recorded for deletion, want %d", len(pend), len(want))
	}
	for _, k := range pend {
		if !want[k] {
			t.Errorf("blob %s recorded for deletion: the stored one, or not stored", k)
		}
	}
	for k, n := range replaced {
		if n != 1 || k == got.BlobKey {
			t.Errorf("blob %s reported replaced %d times", k, n)
		}
	}
	if len(replaced) != len(want) {
		t.Errorf("%d Puts reported a replaced blob, want %d", len(replaced), len(want))
	}
}

// TestDeleteWhileStoring: a node deleting the only instance of a series
// while another stores into it leaves every stored instance with its
// series, study and patient (a parent deleted as empty under a store is
// made again).
func TestDeleteWhileStoring(t *testing.T) {
	ctx := context.Background()
	dsn := harness.StartPostgres(t).NewDatabase(t)
	a, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const rounds = 60
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range rounds {
			if _, err := a.Put(ctx, storetest.Sample(1000+i, 1, 1)); err != nil {
				t.Errorf("Put: %v", err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range rounds {
			in := storetest.Sample(i, 1, 1)
			if _, err := b.Put(ctx, in); err != nil {
				t.Errorf("Put: %v", err)
				return
			}
			if err := b.Delete(ctx, in.SOPInstanceUID); err != nil {
				t.Errorf("Delete: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	c, err := a.Counts(ctx)
	if err != nil || c != (store.Counts{Patients: 1, Studies: 1, Series: 1, Instances: rounds}) {
		t.Errorf("counts %+v, %v", c, err)
	}
	for i := range rounds {
		if _, err := a.Get(ctx, storetest.Sample(1000+i, 1, 1).SOPInstanceUID); err != nil {
			t.Errorf("instance %d: %v", i, err)
		}
	}
}

// TestUnavailable: while the server is down every call fails with
// store.ErrUnavailable (a transient failure for the archive) and nothing
// half-done stays; once it is back, the same handle works again and what
// was acknowledged before is there.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	pg := harness.NewPostgres(t)
	db, err := Open(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before := storetest.Sample(1, 1, 1)
	if _, err := db.Put(ctx, before); err != nil {
		t.Fatal(err)
	}
	for _, stop := range []func() error{pg.Stop, pg.Kill} {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		in := storetest.Sample(2, 1, 1)
		if _, err := db.Put(ctx, in); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Put while the server is down: %v, want ErrUnavailable", err)
		}
		if err := db.Insert(ctx, in); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Insert while the server is down: %v, want ErrUnavailable", err)
		}
		if _, err := db.Get(ctx, before.SOPInstanceUID); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Get while the server is down: %v, want ErrUnavailable", err)
		}
		q := store.Query{Level: store.LevelStudy}
		if err := db.Query(ctx, &q, func(store.Match) error { return nil }); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Query while the server is down: %v, want ErrUnavailable", err)
		}
		if err := pg.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Get(ctx, in.SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the refused Put left %v", err)
		}
		if got, err := db.Get(ctx, before.SOPInstanceUID); err != nil || got.BlobKey != before.BlobKey {
			t.Errorf("after the restart: %v, %v", got, err)
		}
		if _, err := db.Put(ctx, storetest.Sample(3, 1, 1)); err != nil {
			t.Errorf("Put after the restart: %v", err)
		}
		if err := db.Delete(ctx, storetest.Sample(3, 1, 1).SOPInstanceUID); err != nil {
			t.Errorf("Delete after the restart: %v", err)
		}
	}
}

// TestRestartBetweenCalls: a server restarted between two calls leaves
// the pool with connections it closed; the next calls run on new ones
// and succeed, however soon they come.
func TestRestartBetweenCalls(t *testing.T) {
	ctx := context.Background()
	pg := harness.NewPostgres(t)
	db, err := Open(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for round := range 3 {
		// Several connections in the pool, each used a moment ago.
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := db.Put(ctx, storetest.Sample(round*10+i, 1, 1)); err != nil {
					t.Errorf("Put: %v", err)
				}
			}()
		}
		wg.Wait()
		restart := pg.Restart
		if round == 2 {
			restart = func() error {
				if err := pg.Kill(); err != nil {
					return err
				}
				return pg.Start()
			}
		}
		if err := restart(); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := storetest.Sample(100+round*10+i, 1, 1)
				if _, err := db.Put(ctx, in); err != nil {
					t.Errorf("Put right after a restart: %v", err)
				}
				if _, err := db.Get(ctx, in.SOPInstanceUID); err != nil {
					t.Errorf("Get right after a restart: %v", err)
				}
				q := store.Query{Level: store.LevelStudy}
				if err := db.Query(ctx, &q, func(store.Match) error { return nil }); err != nil {
					t.Errorf("Query right after a restart: %v", err)
				}
			}()
		}
		wg.Wait()
	}
}

// TestEnvironment: what the URL leaves out comes from libpq's
// environment variables and password file, as pgx reads them: here the
// socket, the database, the user and its password.
func TestEnvironment(t *testing.T) {
	ctx := context.Background()
	pg := harness.StartPostgres(t)
	name, err := pg.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "ALTER DATABASE "+name+" OWNER TO "+pg.User); err != nil {
		t.Fatal(err)
	}
	pass := filepath.Join(t.TempDir(), "pgpass")
	line := fmt.Sprintf("*:%d:%s:%s:%s\n", pg.Port, name, pg.User, pg.Password)
	if err := os.WriteFile(pass, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGHOST", pg.SocketDir)
	t.Setenv("PGPORT", fmt.Sprint(pg.Port))
	t.Setenv("PGDATABASE", name)
	t.Setenv("PGUSER", pg.User)
	t.Setenv("PGSSLMODE", "disable")
	t.Setenv("PGPASSFILE", pass)
	db, err := Open(ctx, "postgres://")
	if err != nil {
		t.Fatalf("open with the environment and a password file: %v", err)
	}
	defer db.Close()
	if _, err := db.Put(ctx, storetest.Sample(1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	// A wrong password is refused, and the error does not quote the URL.
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	secret := "not-the-password-" + pg.Password[:4]
	if db, err := Open(ctx, "postgres://"+pg.User+":"+secret+"@/"+name); err == nil {
		db.Close()
		t.Error("a wrong password was admitted")
	} else if strings.Contains(err.Error(), secret) {
		t.Errorf("the error quotes the password: %v", err)
	}
	if _, err := Open(ctx, "postgres://u:"+secret+"@[::1"); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("a URL that does not parse: %v", err)
	}
}

// TestText: what PostgreSQL text cannot hold (a NUL, bytes that are
// not UTF-8) is stored as U+FFFD in the index, and a query for the same
// value finds it; in a UID or blob key it is refused.
func TestText(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	defer db.Close()
	for _, f := range []func(*store.Instance){
		func(in *store.Instance) { in.SOPInstanceUID = "1.2\x003" },
		func(in *store.Instance) { in.StudyInstanceUID = "1.2.\xff" },
		func(in *store.Instance) { in.BlobKey = "k\x00" },
	} {
		in := storetest.Sample(1, 1, 1)
		f(in)
		if _, err := db.Put(ctx, in); err == nil || !strings.Contains(err.Error(), "UTF-8") {
			t.Errorf("Put of %+v: %v", in, err)
		}
	}
	in := storetest.Sample(1, 1, 1)
	in.PatientName = "Doe\x00John"
	in.StudyDescription = "\xff\xfeCT"
	in.Sequences = []store.SequenceItem{{Attribute: "ProcedureCodeSequence", Level: store.LevelStudy, Values: map[string]string{"CodeValue": "A\x00"}}}
	if _, err := db.Put(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := db.Get(ctx, in.SOPInstanceUID)
	if err != nil || got.PatientName != "Doe\uFFFDJohn" || got.StudyDescription != "\uFFFDCT" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	for _, k := range []store.Key{
		{Attribute: "PatientName", Kind: store.MatchSingle, Value: "doe\x00john"},
		{Attribute: "StudyDescription", Kind: store.MatchWildcard, Value: "\xff\xfe*"},
		{Attribute: "ProcedureCodeSequence", Kind: store.MatchSequence, Level: store.LevelStudy, Items: []store.Key{
			{Attribute: "CodeValue", Kind: store.MatchSingle, Value: "A\x00"}}},
	} {
		q := store.Query{Level: store.LevelStudy, Keys: []store.Key{k}}
		n := 0
		if err := db.Query(ctx, &q, func(store.Match) error { n++; return nil }); err != nil || n != 1 {
			t.Errorf("%+v: %d matches, %v", k, n, err)
		}
	}
	for _, k := range []store.Key{
		{Attribute: "StudyInstanceUID", Kind: store.MatchList, Values: []string{"\xff"}},
		{Attribute: "StudyDate", Kind: store.MatchRange, Lo: "\xff"},
	} {
		q := store.Query{Level: store.LevelStudy, Keys: []store.Key{k}}
		n := 0
		if err := db.Query(ctx, &q, func(store.Match) error { n++; return nil }); err != nil || n != 0 {
			t.Errorf("%+v: %d matches, %v", k, n, err)
		}
	}
	if _, err := db.Get(ctx, "\x00"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a NUL: %v", err)
	}
}
