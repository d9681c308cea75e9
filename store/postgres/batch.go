package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/store"
)

// Group commit. Put and Insert hand their row to one of batchLoops
// loops. A loop takes one row, then every row already waiting (up to
// maxBatch), and writes them in one transaction, each inside a savepoint,
// with one COMMIT: one flush of the server's WAL for the rows that
// arrived together, rather than one each. A caller is answered only
// after that COMMIT returned (as the server's synchronous_commit says:
// nothing here turns it off), so a nil error means its row is as durable
// as a transaction of its own would have made it.
//
// Rows are isolated: a row whose statements fail is rolled back to its
// savepoint and the others go on. Its error is its answer (an instance
// that exists, for Insert), or, when it lost a race (with another node,
// or with a row of its own batch: see retryable) or its connection
// failed, the row is written again alone, with tx's retries, once the
// batch committed. A batch whose transaction itself fails before COMMIT
// (the connection lost, a savepoint that cannot be rolled back) committed
// nothing: each of its rows is written again alone. One whose COMMIT
// fails may have committed: its rows get the error, as a lone write's
// would (never written twice).
//
// A lone row (nothing else waiting) is written as before, in a
// transaction of its own with its caller's context: one association pays
// nothing for the batching. In a batch, statements run with a context of
// their own (batchTimeout): one caller giving up must not break the
// transaction of the others. A caller whose context ends before a loop
// takes its row is answered with its context's error and nothing is
// written.
//
// Two loops: while one batch waits for its COMMIT, the other gathers and
// writes the rows that arrive meanwhile.
const (
	batchLoops   = 2
	maxBatch     = 64
	batchTimeout = time.Minute
)

type putRequest struct {
	ctx     context.Context
	in      *store.Instance
	newOnly bool
	res     store.PutResult
	done    chan error
}

type batcher struct {
	reqs chan *putRequest // unbuffered: a send succeeds only when a loop takes it
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	// For tests: batches of more than one row, and their rows.
	mu            sync.Mutex
	batches, rows int
}

func (db *DB) startBatcher() {
	b := &batcher{reqs: make(chan *putRequest), quit: make(chan struct{})}
	db.batch = b
	b.wg.Add(batchLoops)
	for range batchLoops {
		go func() {
			defer b.wg.Done()
			db.batchLoop()
		}()
	}
}

func (db *DB) stopBatcher() {
	b := db.batch
	b.once.Do(func() { close(b.quit) })
	b.wg.Wait()
}

// write hands in to a loop and waits for its answer.
func (db *DB) write(ctx context.Context, in *store.Instance, newOnly bool) (store.PutResult, error) {
	if db.closed.Load() {
		return store.PutResult{}, store.ErrClosed
	}
	r := &putRequest{ctx: ctx, in: in, newOnly: newOnly, done: make(chan error, 1)}
	select {
	case db.batch.reqs <- r:
	case <-ctx.Done():
		return store.PutResult{}, ctx.Err()
	case <-db.batch.quit:
		return store.PutResult{}, store.ErrClosed
	}
	// Taken: answered once its batch ends, whatever ctx does (the batch
	// bounds its own statements).
	err := <-r.done
	return r.res, err
}

func (db *DB) batchLoop() {
	b := db.batch
	reqs := make([]*putRequest, 0, maxBatch)
	for {
		var first *putRequest
		select {
		case first = <-b.reqs:
		case <-b.quit:
			return
		}
		reqs = append(reqs[:0], first)
	gather:
		for len(reqs) < maxBatch {
			select {
			case r := <-b.reqs:
				reqs = append(reqs, r)
			default:
				break gather
			}
		}
		db.runBatch(reqs)
	}
}

// alone writes one row in a transaction of its own (tx's retries) with
// its caller's context.
func (db *DB) alone(r *putRequest) {
	err := db.tx(r.ctx, func(tx pgx.Tx) error {
		var err error
		r.res, err = put(r.ctx, tx, r.in, r.newOnly)
		return err
	})
	r.done <- err
}

func (db *DB) runBatch(reqs []*putRequest) {
	live := reqs[:0:0]
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.done <- err
			continue
		}
		live = append(live, r)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		db.alone(live[0])
		return
	}
	b := db.batch
	b.mu.Lock()
	b.batches++
	b.rows += len(live)
	b.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	outs, tx, err := db.batchTx(ctx, live)
	if err != nil {
		// The transaction failed before COMMIT: nothing committed.
		for _, r := range live {
			db.alone(r)
		}
		return
	}
	var cerr error
	if tx != nil {
		cerr = tx.Commit(ctx)
	}
	var again []*putRequest
	for i, r := range live {
		switch o := outs[i]; {
		case o.again:
			again = append(again, r)
		case o.err != nil:
			r.done <- o.err
		default:
			// A failed COMMIT may have committed: not written again.
			r.done <- classify(cerr)
		}
	}
	for _, r := range again {
		db.alone(r)
	}
}

// outcome is what became of a row in a batch: written (neither field),
// refused for good (err), or to be written again alone (again).
type outcome struct {
	err   error
	again bool
}

// batchTx writes reqs in one transaction, each in a savepoint, and
// returns it open for COMMIT (nil when no row was written: rolled back)
// with each row's outcome. An error means the transaction failed and was
// rolled back: nothing of it committed, no outcome holds.
func (db *DB) batchTx(ctx context.Context, reqs []*putRequest) ([]outcome, pgx.Tx, error) {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	rollback := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = tx.Rollback(rctx)
		cancel()
	}
	outs := make([]outcome, len(reqs))
	wrote := false
	for i, r := range reqs {
		sp, err := tx.Begin(ctx) // SAVEPOINT
		if err != nil {
			rollback()
			return nil, nil, err
		}
		res, perr := put(ctx, sp, r.in, r.newOnly)
		if perr == nil {
			if err := sp.Commit(ctx); err != nil { // RELEASE SAVEPOINT
				rollback()
				return nil, nil, err
			}
			r.res, wrote = res, true
			continue
		}
		if err := sp.Rollback(ctx); err != nil { // ROLLBACK TO SAVEPOINT
			rollback()
			return nil, nil, errors.Join(perr, err)
		}
		switch {
		case connectionLost(perr):
			rollback()
			return nil, nil, perr
		case retryable(perr):
			outs[i].again = true
		default:
			outs[i].err = classify(perr)
		}
	}
	if !wrote {
		rollback()
		return outs, nil, nil
	}
	return outs, tx, nil
}

// batchStats reports the batches of more than one row written, and
// their rows (for tests).
func (db *DB) batchStats() (batches, rows int) {
	db.batch.mu.Lock()
	defer db.batch.mu.Unlock()
	return db.batch.batches, db.batch.rows
}
