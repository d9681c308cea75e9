// Command synthindex writes a synthetic Ward SQLite index for benchmarks:
//
//	go run ./internal/cmd/synthindex -n 1000000 -out /work/tmp/ward-synth.db
//
// See sqlite.BuildSynthetic for the shape of the data and how it is built.
// The index has no blobs: it serves C-FIND benchmarks, not retrieves.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/ward-pacs/ward/store/sqlite"
)

func main() {
	n := flag.Int("n", 1_000_000, "number of instances")
	seed := flag.Int64("seed", 1, "random seed (the index is deterministic for a seed)")
	out := flag.String("out", "", "database file to create (must not exist)")
	flag.Parse()
	if *out == "" || *n <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if _, err := os.Stat(*out); err == nil {
		fmt.Fprintf(os.Stderr, "synthindex: %s exists\n", *out)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	if err := sqlite.BuildSynthetic(ctx, *out, *n, *seed); err != nil {
		fmt.Fprintf(os.Stderr, "synthindex: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d instances in %s: %s\n", *n, time.Since(start).Round(time.Millisecond), *out)
}
