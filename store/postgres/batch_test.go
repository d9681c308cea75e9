package postgres

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/storetest"
	"github.com/ward-pacs/ward/test/harness"
)

// TestGroupCommit: Inserts and Puts that arrive together share
// transactions (batches of several rows are seen), each caller is
// answered only once its row is committed (another node's handle reads
// it at once), and rows are isolated: an Insert of an instance that
// exists gets store.ErrInstanceExists, a row the server refuses gets its
// error, and the rows beside them are committed.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	dsn := harness.StartPostgres(t).NewDatabase(t)
	db, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other, err := Open(ctx, dsn) // another node
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := db.Insert(ctx, storetest.Sample(1000, 1, 1)); err != nil {
		t.Fatal(err)
	}

	const writers = 48
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				n := 2000 + round*writers + i
				in := storetest.Sample(n, 1+i%3, 1+i%5)
				switch i % 12 {
				case 0: // exists
					err := db.Insert(ctx, storetest.Sample(1000, 1, 1))
					if !errors.Is(err, store.ErrInstanceExists) {
						t.Errorf("Insert of an instance that exists: %v, want ErrInstanceExists", err)
					}
					return
				case 1: // refused by the server (out of range for its column)
					in.Rows = 1 << 40
					if _, err := db.Put(ctx, in); err == nil {
						t.Errorf("Put of a row the server refuses: no error")
					}
					if _, err := other.Get(ctx, in.SOPInstanceUID); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("a refused row is visible: %v", err)
					}
					return
				case 2:
					if _, err := db.Put(ctx, in); err != nil {
						t.Errorf("Put: %v", err)
						return
					}
				default:
					if err := db.Insert(ctx, in); err != nil {
						t.Errorf("Insert: %v", err)
						return
					}
				}
				if _, err := other.Get(ctx, in.SOPInstanceUID); err != nil {
					t.Errorf("answered before its commit: another node cannot read it: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
		if b, _ := db.batchStats(); b > 0 {
			break
		}
	}
	batches, rows := db.batchStats()
	if batches == 0 {
		t.Fatal("no batch of several rows in 5 rounds of 48 concurrent writers")
	}
	t.Logf("%d batches of %d rows in all", batches, rows)
	c, err := other.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pend, err := db.PendingBlobDeletes(ctx, 0)
	if err != nil || len(pend) != 0 {
		t.Errorf("pending blob deletes %v, %v: want none (no row replaced)", pend, err)
	}
	if c.Instances < 1+writers*10/12 {
		t.Errorf("%d instances stored", c.Instances)
	}
}

// TestGroupCommitClosed: a write after Close is store.ErrClosed, and
// Close returns while writers wait.
func TestGroupCommitClosed(t *testing.T) {
	db := openTest(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = db.Insert(context.Background(), storetest.Sample(3000+i, 1, 1))
		}()
	}
	db.Close()
	wg.Wait()
	if err := db.Insert(context.Background(), storetest.Sample(1, 1, 1)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Insert after Close: %v, want ErrClosed", err)
	}
}
