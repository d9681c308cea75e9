package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

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
When ward serve runs on the data directory, the command asks it over its
admin socket (DATA/admin.sock, for the user ward serve runs as or root) and
it does the work while serving; otherwise the command opens the data
directory itself.`)
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
	r := &server.StudyRequest{Op: sub, Studies: uids}
	if sub == "delete" {
		r.Reason = strings.TrimSpace(*reason)
		if r.Reason == "" {
			return errors.New("--reason is required: a deletion is recorded in the audit trail with why it was made")
		}
	} else {
		if *out == "" {
			return errors.New("--out is required")
		}
		if r.Out, err = filepath.Abs(*out); err != nil {
			return err
		}
		r.Media = *media
	}
	if err := r.Check(); err != nil {
		return err
	}
	c, err := loadConfig(*configPath, *dataDir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	// A running ward serve does it (and records it in its audit trail);
	// otherwise the data directory is opened here.
	res, err := server.RemoteStudyOp(ctx, c.DataDir, r)
	if errors.Is(err, server.ErrNoServer) {
		res, err = offlineStudyOp(ctx, e, c, r)
	}
	var failed []error
	for _, x := range res {
		if x.Error != "" {
			failed = append(failed, fmt.Errorf("study %s: %s", x.Study, x.Error))
			continue
		}
		fmt.Fprintf(e.stdout, "%s study %s: %d instances\n", map[string]string{"delete": "deleted", "export": "exported"}[sub], x.Study, x.Instances)
	}
	return errors.Join(append(failed, err)...)
}

func offlineStudyOp(ctx context.Context, e *env, c *config.Config, r *server.StudyRequest) ([]server.StudyResult, error) {
	log, err := newLogger(e.stderr, "warn", "text")
	if err != nil {
		return nil, err
	}
	adm, err := server.OpenAdmin(ctx, c, log)
	if err != nil {
		return nil, err
	}
	res, err := adm.StudyOp(ctx, server.Operator(), r)
	return res, errors.Join(err, adm.Close())
}
