package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/termsafe"
)

var statusCmd = &command{
	name: "status", summary: "counts of the archive and its disk space (no patient data)",
	args: "[--json] [--config FILE | --data DIR]",
	help: `Prints the counts of the archive (patients, studies, series, instances,
bytes) and the free space of its disk, and whether a ward serve runs on
the data directory (asked over its admin socket). It prints no patient
data.`,
	flags: statusFlags,
}

func statusFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	return func(e *env, pos []string) error {
		c, err := df.load()
		if err != nil {
			return err
		}
		ctx := context.Background()
		st, err := admin.RemoteStatus(ctx, c.DataDir)
		if errors.Is(err, admin.ErrNoServer) {
			err = offline(ctx, e, c, func(adm *admin.Admin) (err error) {
				st, err = adm.Status(ctx)
				return err
			})
		}
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		serving := "not running"
		if st.Serving {
			serving = "running"
		}
		fmt.Fprintf(e.stdout, "ward serve:    %s on %s\n", serving, st.DataDir)
		fmt.Fprintf(e.stdout, "node:          %s\n", st.Node)
		n := st.Counts
		fmt.Fprintf(e.stdout, "archive:       %s patients, %s studies, %s series, %s instances\n",
			humanize.Comma(n.Patients), humanize.Comma(n.Studies), humanize.Comma(n.Series), humanize.Comma(n.Instances))
		if st.DiskTotal >= 0 {
			state := "C-STOREs accepted"
			if st.StoresRefused {
				state = "C-STOREs REFUSED: free space below the reserve"
			}
			fmt.Fprintf(e.stdout, "objects' disk: %s free of %s, %s kept in reserve; %s\n",
				humanize.IBytes(uint64(st.DiskFree)), humanize.IBytes(uint64(st.DiskTotal)), humanize.IBytes(uint64(st.DiskReserve)), state)
		}
		if st.AuditFailing != "" {
			state := "patient-data services served on ([audit] on_failure = \"continue\")"
			if st.AuditRefusing {
				state = "C-STORE, C-FIND, C-MOVE and C-GET REFUSED until it can"
			}
			fmt.Fprintf(e.stdout, "audit trail:   CANNOT BE WRITTEN (%s); %s\n", termsafe.Text(st.AuditFailing, ""), state)
		}
		if st.DeletionsHeld {
			fmt.Fprintf(e.stdout, "deletion:      held by a backup (of this node or another sharing the index)\n")
		}
		if st.AwaitingDeletion > 0 {
			fmt.Fprintf(e.stdout, "deletion:      %d objects of deleted or replaced instances not yet removed\n", st.AwaitingDeletion)
		}
		return nil
	}
}
