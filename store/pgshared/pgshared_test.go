package pgshared_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-pacs/ward/store/pgshared"
	"github.com/ward-pacs/ward/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

func open(t *testing.T, dsn string) *pgshared.Shared {
	t.Helper()
	s, err := pgshared.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestMigrateConcurrently: several nodes starting at once on an empty
// database all come up (the migration runs once, under its lock).
func TestMigrateConcurrently(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := pgshared.Open(context.Background(), dsn, nil)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dsn)
	if v, err := s.Versions(context.Background()); err != nil || len(v) != 0 {
		t.Fatalf("versions of a new database: %v, %v", v, err)
	}
}

// TestEditDocumentNoLostUpdate: concurrent edits from several nodes each
// see the one before (the row lock); an edit that fails or changes
// nothing writes nothing.
func TestEditDocumentNoLostUpdate(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	ctx := context.Background()
	nodes := []*pgshared.Shared{open(t, dsn), open(t, dsn), open(t, dsn)}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := nodes[i%3].EditDocument(ctx, "peers", "op", func(b []byte) ([]byte, error) {
				return append(b, []byte(strconv.Itoa(i)+",")...), nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	b, v, err := nodes[0].Document(ctx, "peers")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), ","); got != 30 || v != 30 {
		t.Fatalf("%d edits kept, version %d; want 30, 30", got, v)
	}
	boom := errors.New("boom")
	if _, err := nodes[1].EditDocument(ctx, "peers", "op", func([]byte) ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("edit error: %v", err)
	}
	if _, err := nodes[1].EditDocument(ctx, "peers", "op", func(b []byte) ([]byte, error) { return b, nil }); err != nil {
		t.Fatal(err)
	}
	if b2, v2, _ := nodes[2].Document(ctx, "peers"); v2 != 30 || string(b2) != string(b) {
		t.Fatalf("a failed or empty edit wrote: version %d", v2)
	}
	if by, _ := nodes[2].UpdatedBy(ctx, "peers"); by != "op" {
		t.Fatalf("updated_by %q", by)
	}
	if _, err := nodes[0].EditDocument(ctx, "big", "op", func([]byte) ([]byte, error) { return make([]byte, pgshared.MaxDocument+1), nil }); !errors.Is(err, pgshared.ErrTooLarge) {
		t.Fatalf("oversized document: %v", err)
	}
}

// TestWatch: a change made through one node is reported to a watcher on
// another within seconds, also after its listening connection was
// killed (it reconnects, and polls meanwhile).
func TestWatch(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := open(t, dsn), open(t, dsn)
	got := make(chan string, 16)
	done := make(chan struct{})
	go func() { defer close(done); b.Watch(ctx, func(n string) { got <- n }) }()
	wait := func(name string) {
		t.Helper()
		deadline := time.After(3 * pgshared.PollInterval)
		for {
			select {
			case n := <-got:
				if n == name {
					return
				}
			case <-deadline:
				t.Fatalf("change of %s not reported", name)
			}
		}
	}
	// Let the listener connect.
	time.Sleep(300 * time.Millisecond)
	edit := func(name string) {
		// A pooled connection killed below fails once.
		var err error
		for range 3 {
			if _, err = a.EditDocument(ctx, name, "op", func(b []byte) ([]byte, error) { return append(b, 'x'), nil }); err == nil {
				return
			}
		}
		t.Fatal(err)
	}
	edit("users")
	wait("users")
	// Kill every other connection to the database (the listener's
	// among them).
	killer := open(t, dsn)
	if err := killer.TerminateOthers(ctx); err != nil {
		t.Fatal(err)
	}
	edit("tokens")
	wait("tokens")
	cancel()
	<-done
}

func TestSessions(t *testing.T) {
	dsn := harness.StartPostgres(t).NewDatabase(t)
	ctx := context.Background()
	a, b := open(t, dsn), open(t, dsn)
	a.SeenEvery = 0
	b.SeenEvery = 0
	t0 := time.Now().Truncate(time.Second)
	k1, k2, k3 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two")), sha256.Sum256([]byte("three"))
	for i, k := range [][32]byte{k1, k2, k3} {
		user := "ana"
		if i == 2 {
			user = "bob"
		}
		if err := a.CreateSession(ctx, k, user, []byte("body"+strconv.Itoa(i)), t0, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	// Seen through the other node.
	if body, err := b.LookupSession(ctx, k1, t0.Add(time.Minute), 10*time.Minute); err != nil || string(body) != "body0" {
		t.Fatalf("lookup on the other node: %q %v", body, err)
	}
	// Used at +1m, k1 lives past +10m; k2, unused, does not.
	if body, _ := a.LookupSession(ctx, k1, t0.Add(10*time.Minute+time.Second), 10*time.Minute); body == nil {
		t.Fatal("k1 ended though used")
	}
	if body, _ := a.LookupSession(ctx, k2, t0.Add(10*time.Minute+time.Second), 10*time.Minute); body != nil {
		t.Fatal("k2 outlived its idle timeout")
	}
	// Sign-out on one node ends it on the other.
	if body, err := b.EndSession(ctx, k1); err != nil || string(body) != "body0" {
		t.Fatalf("end: %q %v", body, err)
	}
	if body, _ := a.LookupSession(ctx, k1, t0.Add(11*time.Minute), 10*time.Minute); body != nil {
		t.Fatal("an ended session lives on")
	}
	if err := a.EndUserSessions(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if body, _ := b.LookupSession(ctx, k3, t0.Add(time.Minute), 10*time.Minute); body != nil {
		t.Fatal("EndUserSessions")
	}
	// Past the absolute expiry, gone; and purged.
	k4 := sha256.Sum256([]byte("four"))
	_ = a.CreateSession(ctx, k4, "eve", []byte("b"), t0, t0.Add(time.Hour))
	if n, err := a.PurgeSessions(ctx, t0.Add(2*time.Hour), 10*time.Minute); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
}
