package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/dicom/deid"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/internal/termsafe"
)

var studyCmd = &command{
	name: "study", summary: "delete, export or verify studies (delete and export are recorded in the audit trail)",
	help: `The audit messages of delete and export name the operating-system user who
ran the command.
When ward serve runs on the data directory, the command asks it over its
admin socket (DATA/admin.sock, for the user ward serve runs as or root) and
it does the work while serving; otherwise the command opens the data
directory itself.`,
	subs: []*command{
		{
			name: "delete", summary: "delete studies, with the reason recorded in the audit trail",
			args: "STUDY-INSTANCE-UID... --reason TEXT [--config FILE | --data DIR]", minArgs: 1, maxArgs: anyArgs,
			help: `Removes every instance of each study from the index and its objects
from disk, recorded as DICOM Study Deleted (PS3.15 A.5.3.5) with the reason.`,
			flags: studyOpFlags("delete"),
		},
		{
			name: "export", summary: "copy studies into a folder, recorded in the audit trail",
			args: "STUDY-INSTANCE-UID... --out DIR [--media usb|cd|dvd|email|uri] [--deidentify basic[,OPTION...] --deid-secret-file FILE [--accept-burned-in]] [--config FILE | --data DIR]", minArgs: 1, maxArgs: anyArgs,
			help: `Copies each study's objects as stored (Part 10) into
DIR/STUDY/SERIES/SOP.dcm, recorded as Export (A.5.3.7) to that media.
With --deidentify, each object is de-identified on the way out by the
PS3.15 Basic Application Level Confidentiality Profile and the options
named (modified-dates, full-dates, patient-characteristics,
device-identity, institution-identity, uids, safe-private,
clean-descriptors, clean-structured-content), under the project's secret
(ward deid secret FILE makes one), and written under its new UIDs; objects
whose pixels may show identity (Burned In Annotation YES, or absent on
US, SC, XA and other modalities listed in docs/deidentification.md) are
quarantined (counted, not exported) unless --accept-burned-in. The audit
message marks the study Anonymized, with the method and its new UID.`,
			flags: studyOpFlags("export"),
		},
		{
			name: "verify", summary: "check stored objects against the index",
			args: "[STUDY-INSTANCE-UID...] [--max-rate MB/S] [--json] [--config FILE | --data DIR]", maxArgs: anyArgs,
			help: `Reads every stored object (or those of the studies named) and checks
it against the index: present, the size and CRC-32C recorded when it was
stored, a Part 10 file with a zeroed preamble naming the same SOP instance,
class and transfer syntax; verifying every study also finds stored objects
no index row names. With encryption at rest, every object is decrypted,
which checks each chunk's authentication tag: an object altered in
storage is listed as failing authentication. It lists each object that
fails and exits 1.
--max-rate caps the reading rate, to leave a serving archive's disk to its
peers.`,
			flags: studyVerifyFlags,
		},
	},
}

// checkStudyUIDs refuses an argument that cannot name a study.
func checkStudyUIDs(uids []string) error {
	for _, u := range uids {
		// Any value Ward stores (leading zeros included), and also one an
		// older Ward stored before it checked UIDs, so that such a study
		// can still be verified, exported or deleted: the value is only
		// looked up, never made a path.
		if !dicom.StorableUID(u) && !legacyUID(u) {
			return fmt.Errorf("%q is not a Study Instance UID", u)
		}
	}
	return nil
}

func studyVerifyFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	asJSON := fs.Bool("json", false, "print the report and the problems as JSON")
	maxRate := fs.Float64("max-rate", 0, "read at most this many MB (10^6 bytes) per second, on average (0: no cap)")
	return func(e *env, uids []string) error {
		if err := checkStudyUIDs(uids); err != nil {
			return err
		}
		if *maxRate < 0 {
			return errors.New("--max-rate must not be negative")
		}
		return verifyStudies(e, *df.config, *df.data, archive.VerifyOptions{Studies: uids, MaxRate: int64(*maxRate * 1e6)}, *asJSON)
	}
}

// studyOpFlags is ward study delete or export (op).
func studyOpFlags(op string) func(*flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		df := addDataFlags(fs)
		var reason, out, media, deidentify, secretFile *string
		var acceptBurned *bool
		if op == "delete" {
			reason = fs.String("reason", "", "why the studies are deleted (recorded in the audit trail; required)")
		} else {
			out = fs.String("out", "", "folder to export into (required)")
			media = fs.String("media", "usb", "the media the folder is on, for the audit trail: usb, cd, dvd, email, uri")
			deidentify = fs.String("deidentify", "", "de-identify by this profile: basic[,OPTION...] (see docs/deidentification.md)")
			secretFile = fs.String("deid-secret-file", "", "the project's de-identification secret (mode 0600; ward deid secret makes one)")
			acceptBurned = fs.Bool("accept-burned-in", false, "export objects whose pixels may show identity instead of quarantining them")
		}
		return func(e *env, uids []string) error {
			if err := checkStudyUIDs(uids); err != nil {
				return err
			}
			var err error
			r := &admin.StudyRequest{Op: op, Studies: uids}
			if op == "delete" {
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
				if *deidentify != "" {
					if *secretFile == "" {
						return errors.New("--deidentify needs --deid-secret-file (ward deid secret FILE makes one)")
					}
					if r.DeidSecret, err = deid.ReadSecret(*secretFile); err != nil {
						return err
					}
					r.Deidentify, r.AcceptBurnedIn = *deidentify, *acceptBurned
				} else if *secretFile != "" || *acceptBurned {
					return errors.New("--deid-secret-file and --accept-burned-in go with --deidentify")
				}
			}
			if err := r.Check(); err != nil {
				return err
			}
			c, err := df.load()
			if err != nil {
				return err
			}
			ctx := context.Background()
			// A running ward serve does it (and records it in its audit trail);
			// otherwise the data directory is opened here.
			res, err := admin.RemoteStudyOp(ctx, c.DataDir, r)
			if errors.Is(err, admin.ErrNoServer) {
				res, err = offlineStudyOp(ctx, e, c, r)
			} else if err != nil && res == nil && op == "delete" {
				err = fmt.Errorf("%w\nward serve did not answer: each study's deletion was made whole (and is audited by the next start) or not at all; once ward serve runs, ward study delete again deletes what is left (a deleted study is \"no such study\")", err)
			}
			var failed []error
			for _, x := range res {
				if x.Error != "" {
					failed = append(failed, fmt.Errorf("study %s: %s", x.Study, x.Error))
					continue
				}
				if x.NewStudy != "" || x.Quarantined > 0 {
					fmt.Fprintf(e.stdout, "exported study %s de-identified as %s: %d instances, %d quarantined (pixels may show identity)\n", termsafe.Quote(x.Study), termsafe.Quote(x.NewStudy), x.Instances, x.Quarantined)
					continue
				}
				fmt.Fprintf(e.stdout, "%s study %s: %d instances\n", map[string]string{"delete": "deleted", "export": "exported"}[op], termsafe.Quote(x.Study), x.Instances)
			}
			return errors.Join(append(failed, err)...)
		}
	}
}

func offlineStudyOp(ctx context.Context, e *env, c *config.Config, r *admin.StudyRequest) (res []admin.StudyResult, err error) {
	err = offline(ctx, e, c, func(adm *admin.Admin) (err error) {
		res, err = adm.StudyOp(ctx, admin.Operator(), r)
		return err
	})
	return res, err
}

// remoteOrHere asks a running ward serve (remote) and, for want of one
// (admin.ErrNoServer), does it on the data directory of c here (local).
func remoteOrHere[T any](ctx context.Context, e *env, c *config.Config, remote func() (T, error), local func(*admin.Admin) (T, error)) (T, error) {
	res, err := remote()
	if errors.Is(err, admin.ErrNoServer) {
		err = offline(ctx, e, c, func(adm *admin.Admin) (err error) {
			res, err = local(adm)
			return err
		})
	}
	return res, err
}

// offline runs fn on the data directory of c, opened by this command for
// want of a ward serve to ask (admin.ErrNoServer).
func offline(ctx context.Context, e *env, c *config.Config, fn func(*admin.Admin) error) error {
	log, err := newLogger(e.stderr, "warn", "text")
	if err != nil {
		return err
	}
	adm, err := server.OpenAdmin(ctx, c, log)
	if err != nil {
		return err
	}
	return errors.Join(fn(adm), adm.Close())
}

// verifyStudies runs ward study verify: through a running ward serve, else
// on the data directory itself.
func verifyStudies(e *env, configPath, dataDir string, o archive.VerifyOptions, asJSON bool) error {
	c, err := loadConfig(configPath, dataDir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	res, err := admin.RemoteVerify(ctx, c.DataDir, o)
	if errors.Is(err, admin.ErrNoServer) {
		o.Progress = func(p archive.VerifyReport) {
			fmt.Fprintf(e.stderr, "verified %s so far, %.1f MB, %d with problems\n", count(p.Instances, "instance"), float64(p.Bytes)/1e6, p.Problems)
		}
		o.ProgressEvery = 10 * time.Second
		err = offline(ctx, e, c, func(adm *admin.Admin) (err error) {
			res, err = adm.Verify(ctx, o)
			return err
		})
	}
	if res == nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(res); jerr != nil {
			return jerr
		}
	} else {
		for _, p := range res.Problems {
			if p.SOPInstanceUID == "" {
				fmt.Fprintf(e.stdout, "object %s: %s\n", termsafe.Quote(p.BlobKey), termsafe.Text(p.Problem, ""))
				continue
			}
			fmt.Fprintf(e.stdout, "instance %s (study %s, object %s): %s\n", termsafe.Quote(p.SOPInstanceUID), termsafe.Quote(p.StudyInstanceUID), termsafe.Quote(p.BlobKey), termsafe.Text(p.Problem, ""))
		}
		if n := res.Report.Problems - int64(len(res.Problems)); n > 0 {
			fmt.Fprintf(e.stdout, "... and %d more\n", n)
		}
		r := res.Report
		fmt.Fprintf(e.stdout, "verified %s, %.1f MB: %d with problems", count(r.Instances, "instance"), float64(r.Bytes)/1e6, r.Problems)
		if r.Unreferenced > 0 {
			fmt.Fprintf(e.stdout, ", %s no index row names", count(r.Unreferenced, "stored object"))
		}
		if r.NoChecksum > 0 {
			fmt.Fprintf(e.stdout, " (%d stored without a checksum: size and header checked only)", r.NoChecksum)
		}
		fmt.Fprintln(e.stdout)
	}
	if err != nil {
		return err
	}
	if res.Report.Problems > 0 {
		return &exitError{code: 1, err: fmt.Errorf("verification failed for %d of %s", res.Report.Problems, count(res.Report.Instances, "stored instance"))}
	}
	return nil
}

// count is n and noun, plural unless n is 1.
func count(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// legacyUID accepts a value that is no valid UID but may name a study an
// older Ward stored: printable ASCII, at most 256 characters.
func legacyUID(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
