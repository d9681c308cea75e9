package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
)

func runStudy(e *env, args []string) error {
	usage := func() error {
		fmt.Fprintln(e.stderr, `Usage:
  ward study delete STUDY-INSTANCE-UID... --reason TEXT [--config FILE | --data DIR]

Deletes every instance of each study from the index and its objects from
disk, and records a DICOM Study Deleted audit message (PS3.15 A.5.3.5) per
study and patient, naming the operating-system user who ran the command and
the reason. ward serve must be stopped (the command refuses to run while it
holds the data directory).`)
		return errUsage
	}
	if len(args) < 1 {
		return usage()
	}
	sub, args := args[0], args[1:]
	if sub == "-h" || sub == "--help" || sub == "help" {
		usage()
		return flag.ErrHelp
	}
	if sub != "delete" {
		return usage()
	}
	fs := newFlagSet(e, "study delete", "[flags] STUDY-INSTANCE-UID...")
	configPath := fs.String("config", "", "configuration file (TOML; default: DATA/ward.toml when present)")
	dataDir := fs.String("data", "", "data directory (default "+config.DefaultDataDir+")")
	reason := fs.String("reason", "", "why the studies are deleted (recorded in the audit trail; required)")
	uids, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(uids) == 0 {
		return usage()
	}
	if strings.TrimSpace(*reason) == "" {
		return errors.New("--reason is required: a deletion is recorded in the audit trail with why it was made")
	}
	for _, u := range uids {
		if !dicom.ValidUID(u) {
			return fmt.Errorf("%q is not a Study Instance UID", u)
		}
	}
	c, err := loadConfig(*configPath, *dataDir)
	if err != nil {
		return err
	}
	log, err := newLogger(e.stderr, "warn", "text")
	if err != nil {
		return err
	}
	ctx := context.Background()
	adm, err := server.OpenAdmin(ctx, c, log)
	if err != nil {
		return err
	}
	who := audit.Node{AETitle: "ward study delete", ID: operator()}
	var failed []error
	for _, uid := range uids {
		d, err := adm.Archive.DeleteStudy(ctx, uid)
		if d != nil {
			st := &audit.Study{UID: d.UID, PatientID: d.PatientID, Classes: d.Classes}
			outcome := audit.OutcomeSuccess
			if err != nil {
				outcome = audit.OutcomeSeriousFail
			}
			if rerr := adm.Record(audit.StudyDeleted(adm.Node(), who, outcome, []*audit.Study{st}, *reason, time.Now())); rerr != nil {
				err = errors.Join(err, fmt.Errorf("audit record: %w", rerr))
			}
			if err == nil {
				fmt.Fprintf(e.stdout, "deleted study %s: %d instances\n", uid, st.Instances())
			}
		}
		if err != nil {
			failed = append(failed, fmt.Errorf("study %s: %w", uid, err))
		}
	}
	if err := adm.Close(); err != nil {
		failed = append(failed, err)
	}
	return errors.Join(failed...)
}

// operator names who ran an administration command: the operating-system
// user, and the host.
func operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}
