package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxLine bounds one record line when reading a log.
const MaxLine = 8 << 20

// BreakError names the first record where the chain is broken.
type BreakError struct {
	Line   int    // 1-based line number
	Seq    uint64 // the record's seq as written (0 when unreadable)
	Reason string
}

func (e *BreakError) Error() string {
	return fmt.Sprintf("audit chain broken at line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// ErrBroken is what every *BreakError unwraps to.
var ErrBroken = errors.New("audit: chain broken")

func (e *BreakError) Unwrap() error { return ErrBroken }

// Verify reads a log and checks every record: its hash, that it names the
// hash of the one before, and that seq counts up from 1 by one. It returns
// the number of good records, and a *BreakError for the first broken one.
func Verify(r io.Reader) (int, error) {
	n := 0
	prev := ZeroHash
	var seq uint64
	err := scan(r, func(line []byte, lineNo int) error {
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return &BreakError{Line: lineNo, Reason: "not a record: " + err.Error()}
		}
		got, claimed, ok := lineHash(line)
		switch {
		case !ok:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "the line does not end with its hash"}
		case got != claimed:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "the record was altered (its hash does not match its content)"}
		case rec.Seq != seq+1:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: fmt.Sprintf("seq %d follows seq %d (a record was removed, inserted or moved)", rec.Seq, seq)}
		case rec.Prev != prev:
			return &BreakError{Line: lineNo, Seq: rec.Seq, Reason: "prev is not the hash of the record before"}
		}
		prev, seq = claimed, rec.Seq
		n++
		return nil
	})
	return n, err
}

// Each calls fn for every record of a log in order. It stops at the first
// line that is not a record.
func Each(r io.Reader, fn func(*Record) error) error {
	return scan(r, func(line []byte, lineNo int) error {
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("audit: line %d: %w", lineNo, err)
		}
		return fn(&rec)
	})
}

func scan(r io.Reader, fn func(line []byte, lineNo int) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		if err := fn(sc.Bytes(), lineNo); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return &BreakError{Line: lineNo + 1, Reason: err.Error()}
	}
	return nil
}
