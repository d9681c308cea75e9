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

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
)

func runStudy(e *env, args []string) error {
	usage := func() error {
		fmt.Fprintln(e.stderr, `Usage:
  ward study delete STUDY-INSTANCE-UID... --reason TEXT [--config FILE | --data DIR]
  ward study export STUDY-INSTANCE-UID... --out DIR [--media usb|cd|dvd|email|uri] [--config FILE | --data DIR]

delete removes every instance of each study from the index and its objects
from disk, recorded as DICOM Study Deleted (PS3.15 A.5.3.5) with the reason.
export copies each study's objects as stored (Part 10) into
DIR/STUDY/SERIES/SOP.dcm, recorded as Export (A.5.3.7) to that media.
Each audit message names the operating-system user who ran the command.
ward serve must be stopped: both refuse to run while it holds the data
directory (its audit trail).`)
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
	if sub != "delete" && sub != "export" {
		return usage()
	}
	fs := newFlagSet(e, "study "+sub, "[flags] STUDY-INSTANCE-UID...")
	configPath := fs.String("config", "", "configuration file (TOML; default: DATA/ward.toml when present)")
	dataDir := fs.String("data", "", "data directory (default "+config.DefaultDataDir+")")
	var reason, out, media *string
	if sub == "delete" {
		reason = fs.String("reason", "", "why the studies are deleted (recorded in the audit trail; required)")
	} else {
		out = fs.String("out", "", "folder to export into (required)")
		media = fs.String("media", "usb", "the media the folder is on, for the audit trail: usb, cd, dvd, email, uri")
	}
	uids, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(uids) == 0 {
		return usage()
	}
	for _, u := range uids {
		if !dicom.ValidUID(u) {
			return fmt.Errorf("%q is not a Study Instance UID", u)
		}
	}
	var mediaType *audit.Code
	switch {
	case reason != nil && strings.TrimSpace(*reason) == "":
		return errors.New("--reason is required: a deletion is recorded in the audit trail with why it was made")
	case out != nil && *out == "":
		return errors.New("--out is required")
	case media != nil:
		types := map[string]*audit.Code{"usb": audit.MediaUSB, "cd": audit.MediaCD, "dvd": audit.MediaDVD, "email": audit.MediaEmail, "uri": audit.MediaURI}
		if mediaType = types[*media]; mediaType == nil {
			return fmt.Errorf("--media %q: use usb, cd, dvd, email or uri", *media)
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
	who := audit.Node{AETitle: "ward study " + sub, ID: operator()}
	var failed []error
	for _, uid := range uids {
		var d *archive.StudySummary
		if sub == "delete" {
			d, err = adm.Archive.DeleteStudy(ctx, uid)
		} else {
			d, err = adm.Archive.ExportStudy(ctx, uid, *out)
		}
		if d != nil && len(d.Classes) > 0 {
			st := &audit.Study{UID: d.UID, PatientID: d.PatientID, Classes: d.Classes}
			outcome := audit.OutcomeSuccess
			if err != nil {
				outcome = audit.OutcomeSeriousFail
			}
			var m *audit.Message
			if sub == "delete" {
				m = audit.StudyDeleted(adm.Node(), who, outcome, []*audit.Study{st}, *reason, time.Now())
			} else {
				m = audit.Export(adm.Node(), who, audit.Media{ID: *out, Type: mediaType}, outcome, []*audit.Study{st}, time.Now())
			}
			if rerr := adm.Record(m); rerr != nil {
				err = errors.Join(err, fmt.Errorf("audit record: %w", rerr))
			}
			if err == nil {
				verb := map[string]string{"delete": "deleted", "export": "exported"}[sub]
				fmt.Fprintf(e.stdout, "%s study %s: %d instances\n", verb, uid, st.Instances())
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
