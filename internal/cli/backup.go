package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/termsafe"
)

var backupCmd = &command{
	name: "backup", summary: "copy the archive into a folder on another disk, while it serves",
	args: "FOLDER [--max-rate MB/S] [--json] [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
	help: `Copies the archive into FOLDER, on another disk: a snapshot of the index as
it was at one moment, every object it names, and DATA/ward.toml. Into the
folder of an earlier backup, only the objects stored since are copied, and
those deleted since are removed. Until the end, the folder holds the
previous backup, whole. Each copy is checked against the checksum recorded
when its object was stored. FOLDER is laid out as a data directory:
'ward serve --data FOLDER' serves it (to restore, stop Ward and put FOLDER
in place of the data directory). When ward serve runs on the data
directory, it makes the backup while it keeps serving (over its admin
socket); objects of studies deleted meanwhile are kept until the backup
ends. --max-rate caps the copying rate, to leave a serving archive's disk
to its peers. The audit trail and certificates are not copied.`,
	flags: backupFlags,
}

func backupFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	asJSON := fs.Bool("json", false, "print the report and the problems as JSON")
	maxRate := fs.Float64("max-rate", 0, "copy at most this many MB (10^6 bytes) per second, on average (0: no cap)")
	return func(e *env, pos []string) error {
		dir, err := filepath.Abs(pos[0])
		if err != nil {
			return err
		}
		if *maxRate < 0 {
			return errors.New("--max-rate must not be negative")
		}
		rate := int64(*maxRate * 1e6)
		c, err := df.load()
		if err != nil {
			return err
		}
		ctx := context.Background()
		res, err := admin.RemoteBackup(ctx, c.DataDir, dir, rate)
		if errors.Is(err, admin.ErrNoServer) {
			o := archive.CopyOptions{MaxRate: rate, ProgressEvery: 10 * time.Second,
				Progress: func(p archive.BackupReport) {
					fmt.Fprintf(e.stderr, "%s so far, %s copied (%.1f MB)\n", count(p.Instances, "instance"), count(p.Copied, "object"), float64(p.Bytes)/1e6)
				}}
			err = offline(ctx, e, c, func(adm *admin.Admin) (err error) {
				res, err = adm.Backup(ctx, admin.Operator(), dir, o)
				return err
			})
		}
		if res == nil || (err != nil && res.Report.Instances == 0) {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(res); jerr != nil {
				return jerr
			}
		} else {
			for _, p := range res.Problems {
				fmt.Fprintf(e.stdout, "instance %s (study %s, object %s): %s\n", termsafe.Quote(p.SOPInstanceUID), termsafe.Quote(p.StudyInstanceUID), termsafe.Quote(p.BlobKey), termsafe.Text(p.Problem, ""))
			}
			r := res.Report
			fmt.Fprintf(e.stdout, "backup in %s: %s, %s copied (%.1f MB), %s removed, %d with problems\n",
				res.Dir, count(r.Instances, "instance"), count(r.Copied, "object"), float64(r.Bytes)/1e6, count(r.Removed, "object"), r.Problems)
		}
		if err != nil {
			return fmt.Errorf("backup not finished (%s still holds the previous backup, if there was one): %w", dir, err)
		}
		if res.Report.Problems > 0 {
			return &exitError{code: 1, err: fmt.Errorf("%d objects could not be copied as recorded", res.Report.Problems)}
		}
		return nil
	}
}
