package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/termsafe"
)

var patientCmd = &command{
	name: "patient", summary: "erase every study of a patient (right to erasure), audited",
	help: `When ward serve runs on the data directory, the command asks it over its
admin socket; otherwise it opens the data directory itself.`,
	subs: []*command{{
		name: "delete", summary: "erase every instance of a patient across studies, with the reason audited",
		args: "PATIENT-ID --reason TEXT [--issuer ISSUER] [--yes] [--vacuum] [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
		help: `Lists the studies of the patient with that Patient ID (and Issuer of
Patient ID, with --issuer; without it, under any issuer) with their
counts, and once confirmed (type yes, or --yes) deletes each as ward study
delete does: objects from storage, rows, metadata and sequences from the
index, each recorded as DICOM Study Deleted (PS3.15 A.5.3.8) naming the
operator, the Patient ID and the reason. The embedded index then
overwrites what the rows left in its files (--vacuum: rewrites the whole
index, for what an older Ward freed). The next ward backup removes
the patient from the backup folder. What remains (the audit trail's
records of the fact, older backups, exports): docs/security.md,
"Erasure".`,
		flags: patientDeleteFlags,
	}},
}

func patientDeleteFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	reason := fs.String("reason", "", "why the patient's data is erased (recorded in the audit trail; required)")
	issuer := fs.String("issuer", "", "the Issuer of Patient ID (default: any issuer)")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	vacuum := fs.Bool("vacuum", false, "then rewrite the whole embedded index (VACUUM), so that nothing an older Ward freed lingers in it; stores wait or fail meanwhile")
	return func(e *env, pos []string) error {
		r := &admin.StudyRequest{Op: "patient-plan", Patient: pos[0], Reason: strings.TrimSpace(*reason)}
		if r.Reason == "" {
			return errors.New("--reason is required: an erasure is recorded in the audit trail with why it was made")
		}
		if !legacyUID(r.Patient) || len(r.Patient) > 64 {
			return fmt.Errorf("%q is not a Patient ID (printable, at most 64 characters)", r.Patient)
		}
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "issuer" {
				r.Issuer = issuer
			}
		})
		c, err := df.load()
		if err != nil {
			return err
		}
		ctx := context.Background()
		call := func(r *admin.StudyRequest) (*admin.PatientResult, error) {
			return remoteOrHere(ctx, e, c, func() (*admin.PatientResult, error) { return admin.RemotePatient(ctx, c.DataDir, r) },
				func(adm *admin.Admin) (*admin.PatientResult, error) { return adm.Patient(ctx, admin.Operator(), r) })
		}
		plan, err := call(r)
		if err != nil {
			return err
		}
		if len(plan.Studies) == 0 {
			return fmt.Errorf("no study of patient %s is stored", termsafe.Quote(r.Patient))
		}
		var series, insts int
		for _, s := range plan.Studies {
			fmt.Fprintf(e.stdout, "study %s date %s modalities %s series %d instances %d\n", termsafe.Quote(s.Study), termsafe.Quote(s.StudyDate), termsafe.Quote(strings.Join(s.Modalities, `\`)), s.Series, s.Instances)
			series += s.Series
			insts += s.Instances
		}
		fmt.Fprintf(e.stdout, "patient %s: %s, %s, %s\n", termsafe.Quote(r.Patient), plural(len(plan.Studies), "study", "studies"), plural(series, "series", "series"), count(int64(insts), "instance"))
		if !*yes && !confirm(e, "erase all of them") {
			return errors.New("nothing deleted: not confirmed")
		}
		r.Op, r.Vacuum = "patient-delete", *vacuum
		res, err := call(r)
		if err != nil {
			return err
		}
		var failed []error
		n := 0
		for _, d := range res.Deleted {
			if d.Error != "" {
				failed = append(failed, fmt.Errorf("study %s: %s", d.Study, d.Error))
				continue
			}
			n += d.Instances
			fmt.Fprintf(e.stdout, "deleted study %s: %d instances\n", termsafe.Quote(d.Study), d.Instances)
		}
		fmt.Fprintf(e.stdout, "erased patient %s: %s, %s\n", termsafe.Quote(r.Patient), plural(len(res.Deleted)-len(failed), "study", "studies"), count(int64(n), "instance"))
		if res.ScrubError != "" {
			failed = append(failed, fmt.Errorf("the index's files may still hold bytes of the deleted rows: %s", res.ScrubError))
		}
		return errors.Join(failed...)
	}
}

// plural is n and the noun's singular or plural form.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
