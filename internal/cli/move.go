package cli

import (
	"flag"
	"fmt"

	"github.com/ward-pacs/ward/internal/termsafe"
	"github.com/ward-pacs/ward/network/dimse"
)

var moveCmd = &command{
	name: "move", summary: "ask a DICOM peer to send objects to an AE title with C-MOVE",
	args: "--dest TITLE [-P|-S] [--level L] [-k KEY=VALUE]... [--aec TITLE] [--aet TITLE] HOST:PORT", minArgs: 1, maxArgs: 1,
	help: `Asks the peer at HOST:PORT with C-MOVE to send the objects the keys
match to the AE title --dest, which the peer must know, and prints the
counts of its sub-operations. It exits 1 when the move or one of its
sub-operations failed.`,
	flags: moveFlags,
}

func moveFlags(fs *flag.FlagSet) runFunc {
	q := addQRFlags(fs)
	dest := fs.String("dest", "", "move destination AE title (required; the peer must know it)")
	return func(e *env, pos []string) error {
		if *dest == "" {
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
