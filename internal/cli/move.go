package cli

import (
	"fmt"

	"github.com/ward-pacs/ward/internal/termsafe"
	"github.com/ward-pacs/ward/network/dimse"
)

func runMove(e *env, args []string) error {
	fs := newFlagSet(e, "move", "--dest TITLE [-P|-S] [--level L] [-k KEY=VALUE]... [--aec TITLE] [--aet TITLE] HOST:PORT")
	q := addQRFlags(fs)
	dest := fs.String("dest", "", "move destination AE title (required; the peer must know it)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *dest == "" {
		fs.Usage()
		return errUsage
	}
	class, id, _, err := q.request("move")
	if err != nil {
		return err
	}
	ctx, stop := interruptContext()
	defer stop()
	cl, err := q.connect(ctx, pos[0], class, nil, nil)
	if err != nil {
		return err
	}
	a := cl.A
	res, err := cl.Move(ctx, 1, *dest, id, func(c *dimse.Command) {
		fmt.Fprintf(e.stderr, "\rmoving to %s: %d remaining, %d completed, %d failed, %d warning", *dest, c.NumberOfRemaining, c.NumberOfCompleted, c.NumberOfFailed, c.NumberOfWarning)
	})
	if err != nil {
		a.Abort()
		return err
	}
	_ = a.Release()
	return e.retrieveSummary("C-MOVE", res)
}

// retrieveSummary prints the final counts of a C-MOVE or C-GET and fails
// when the operation or any sub-operation failed.
func (e *env) retrieveSummary(op string, res *dimse.RetrieveResult) error {
	f := res.Final
	fmt.Fprintf(e.stderr, "\n")
	fmt.Fprintf(e.stdout, "%s: %d completed, %d failed, %d warning; final status %s\n", op, f.NumberOfCompleted, f.NumberOfFailed, f.NumberOfWarning, statusText(f))
	if len(res.FailedSOPInstanceUIDs) > 0 {
		uids := res.FailedSOPInstanceUIDs
		more := ""
		if len(uids) > 10 {
			uids, more = uids[:10], fmt.Sprintf(" … and %d more", len(res.FailedSOPInstanceUIDs)-10)
		}
		fmt.Fprintf(e.stdout, "  failed SOP instances: %s%s\n", termsafe.List(uids, " "), more)
	}
	if res.Failed() {
		return &exitError{code: 1, err: fmt.Errorf("%s failed (status %s, %d sub-operations failed)", op, statusText(f), f.NumberOfFailed)}
	}
	return nil
}
