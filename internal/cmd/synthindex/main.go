// Command synthindex writes a synthetic Ward index for benchmarks, a SQLite
// file or a PostgreSQL database (-index, which must be empty):
//
//	go run ./internal/cmd/synthindex -n 1000000 -out /work/tmp/ward-synth.db
//	go run ./internal/cmd/synthindex -n 1000000 -load arrival -out /work/tmp/ward-arrival.db
//	go run ./internal/cmd/synthindex -n 10000000 -index 'postgres:///ward_synth?host=/run/postgresql'
//
// Both loads hold the same plan (package store/synth). "bulk" (the default,
// sqlite.BuildSynthetic) inserts it in key order by bulk SQL: fast, and
// kind to locality. "arrival" (synth.LoadArrival) sends every instance
// through the index's own write path (Insert, a durable transaction each),
// studies shuffled and 8 at a time, as from modalities. The index has no
// blobs: it serves C-FIND benchmarks, not retrieves.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/store/postgres"
	"github.com/ward-pacs/ward/store/sqlite"
	"github.com/ward-pacs/ward/store/synth"
)

func main() {
	n := flag.Int("n", 1_000_000, "number of instances")
	seed := flag.Int64("seed", 1, "random seed (the index is deterministic for a seed)")
	out := flag.String("out", "", "SQLite database file to create (must not exist)")
	index := flag.String("index", "", "instead of -out: the postgres:// URL of an empty PostgreSQL database to fill")
	load := flag.String("load", "bulk", "how to load: bulk (key order, bulk SQL) or arrival (Insert, shuffled studies)")
	senders := flag.Int("senders", 8, "with -load arrival: studies received at once")
	flag.Parse()
	if (*out == "") == (*index == "") || *n <= 0 || (*load != "bulk" && *load != "arrival") {
		flag.Usage()
		os.Exit(2)
	}
	if *index != "" {
		where := "the PostgreSQL index" // the URL may hold a password
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		start := time.Now()
		var err error
		if *load == "bulk" {
			err = postgres.BuildSynthetic(ctx, *index, *n, *seed)
		} else {
			err = arrival(ctx, func() (store.Index, error) { return postgres.Open(ctx, *index) }, *n, *seed, *senders, start)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "synthindex: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("%d instances (%s) in %s: %s\n", *n, *load, time.Since(start).Round(time.Millisecond), where)
		return
	}
	if _, err := os.Stat(*out); err == nil {
		fmt.Fprintf(os.Stderr, "synthindex: %s exists\n", *out)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	var err error
	if *load == "bulk" {
		err = sqlite.BuildSynthetic(ctx, *out, *n, *seed)
	} else {
		err = arrival(ctx, func() (store.Index, error) { return sqlite.Open(ctx, *out) }, *n, *seed, *senders, start)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "synthindex: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d instances (%s) in %s: %s\n", *n, *load, time.Since(start).Round(time.Millisecond), *out)
}

func arrival(ctx context.Context, open func() (store.Index, error), n int, seed int64, senders int, start time.Time) error {
	db, err := open()
	if err != nil {
		return err
	}
	got, err := synth.LoadArrival(ctx, db, n, seed, synth.ArrivalOptions{Senders: senders, Progress: func(w int) {
		el := time.Since(start)
		fmt.Fprintf(os.Stderr, "synthindex: %d instances in %s (%.0f/s)\n", w, el.Round(time.Second), float64(w)/el.Seconds())
	}})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil && got != n {
		err = fmt.Errorf("wrote %d of %d instances", got, n)
	}
	return err
}
