package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/dicom/deid"
)

// DeidSummary is what ExportStudyDeidentified wrote: the study under its
// new UID and pseudonymous patient, and the instances it held back.
type DeidSummary struct {
	StudySummary
	// NewUID is the de-identified Study Instance UID (also the folder).
	NewUID string `json:"new_uid"`
	// NewPatientID is the pseudonym written as Patient ID.
	NewPatientID string `json:"new_patient_id"`
	// Quarantined counts the instances not exported because their pixels
	// may show identity (deid.ErrBurnedIn).
	Quarantined int `json:"quarantined"`
}

// ExportStudyDeidentified writes every instance of a study, de-identified
// by cfg, into dir as dir/STUDY/SERIES/SOP.dcm under the new UIDs (the
// original UIDs appear nowhere in the names). Instances deid refuses for
// their burned-in annotation risk are counted in Quarantined and left
// out; any other failure stops the export. Each object is streamed from
// the store through the transform into a temporary file, synced, then
// renamed into place.
func (ar *Archive) ExportStudyDeidentified(ctx context.Context, studyUID, dir string, cfg *deid.Config) (*DeidSummary, error) {
	insts, err := ar.studyInstances(ctx, studyUID)
	if err != nil {
		return nil, err
	}
	d := &DeidSummary{StudySummary: StudySummary{UID: studyUID, Classes: map[string]int{}}}
	for _, in := range insts {
		if err := ctx.Err(); err != nil {
			return d, err
		}
		d.PatientID = in.PatientID
		res, err := ar.deidentifyOne(ctx, in.BlobKey, dir, cfg)
		if errors.Is(err, deid.ErrBurnedIn) {
			d.Quarantined++
			continue
		}
		if err != nil {
			return d, err
		}
		d.Classes[in.SOPClassUID]++
		d.NewUID, d.NewPatientID = res.StudyInstanceUID, res.PatientID
	}
	return d, nil
}

func (ar *Archive) deidentifyOne(ctx context.Context, key, dir string, cfg *deid.Config) (*deid.Result, error) {
	rc, err := ar.Blobs.Open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("opening a stored object: %w", err)
	}
	defer rc.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".export-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	res, err := deid.Transform(f, rc, cfg)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, dicom.UIDFileName(res.StudyInstanceUID), dicom.UIDFileName(res.SeriesInstanceUID), dicom.UIDFileName(res.SOPInstanceUID)+".dcm")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return nil, fmt.Errorf("exporting to %s: %w", path, err)
	}
	return res, nil
}

// SetDeidSecret puts secret in effect for the retrieves that leave
// de-identified from now on (a reload may set, replace or clear it; nil:
// such retrieves are refused). The archive keeps secret as given.
func (ar *Archive) SetDeidSecret(secret []byte) {
	if secret == nil {
		ar.deidSecret.Store(nil)
		return
	}
	ar.deidSecret.Store(&secret)
}

// DeidSecret is the de-identification secret in effect (nil: none).
func (ar *Archive) DeidSecret() []byte {
	if p := ar.deidSecret.Load(); p != nil {
		return *p
	}
	return nil
}

// ErrDeidentifyConflict is the cause of a retrieve refused because two
// parties to it have different de-identification profiles: a C-MOVE's
// requester and destination, or a peer and the user its association
// authenticated as (Error.Err; the Kind is ErrProcessing).
var ErrDeidentifyConflict = errors.New("de-identification profiles differ")

// requesterProfile is the profile of what p retrieves: its own, or its
// user's, or the one both have; refused when they differ.
func requesterProfile(p *Principal) (string, error) {
	switch {
	case p == nil:
		return "", nil
	case p.UserDeidentify == "":
		return p.Deidentify, nil
	case p.Deidentify == "", sameProfile(p.Deidentify, p.UserDeidentify):
		return p.UserDeidentify, nil
	}
	return "", &Error{Kind: ErrProcessing, Comment: "peer and user de-identify differently", Err: ErrDeidentifyConflict}
}

// retrieveProfile is the de-identification profile a retrieve leaves
// under ("" for none): the data leaving Ward is de-identified under the
// profile of whoever requests or receives it. A C-GET (or a web
// retrieve) goes back to its requester: the principal's profile. A
// C-MOVE goes to its destination: the profile of the one of the two that
// has one, or of both when they have the same; when both have one and
// they differ, the C-MOVE is refused (neither is the right one to pick).
// The requester's profile is its peer's or its user's (requesterProfile).
func (ar *Archive) retrieveProfile(ctx context.Context, r *RetrieveRequest) (string, error) {
	mine, err := requesterProfile(PrincipalFrom(ctx))
	if err != nil {
		return "", err
	}
	if r.Destination == "" || ar.DestinationDeidentify == nil {
		return mine, nil
	}
	theirs, err := ar.DestinationDeidentify(r.Destination)
	if err != nil {
		if KindOf(err) != nil {
			return "", err
		}
		return "", &Error{Kind: ErrUnknownDestination, Comment: fmt.Sprintf("move destination %q: registration unreadable", r.Destination), Err: err}
	}
	switch {
	case theirs == "":
		return mine, nil
	case mine == "", sameProfile(mine, theirs):
		return theirs, nil
	}
	return "", &Error{Kind: ErrProcessing, Comment: "requester and destination de-identify differently", Err: ErrDeidentifyConflict}
}

// sameProfile: a and b name the same profile (options in any order).
func sameProfile(a, b string) bool {
	pa, erra := deid.ParseProfile(a)
	pb, errb := deid.ParseProfile(b)
	if erra != nil || errb != nil {
		return a == b
	}
	return pa.String() == pb.String()
}

// deidConfig is the de-identification of a principal's profile.
func (ar *Archive) deidConfig(profile string) (*deid.Config, error) {
	p, err := deid.ParseProfile(profile)
	if err != nil {
		return nil, Fail(ErrNotAuthorized, "the de-identification profile: "+err.Error())
	}
	secret := ar.DeidSecret()
	if len(secret) < deid.MinSecret {
		return nil, Fail(ErrNotAuthorized, "no de-identification secret is configured")
	}
	return &deid.Config{Profile: p, Secret: secret}, nil
}

// deidentify makes in, the stored object under key, one given
// de-identified: its SOP Instance and Series UIDs remapped, its data set
// the output of deid.Transform (streamed through a pipe).
// StudyInstanceUID and PatientID stay the originals: they are for the
// audit trail. An object the transform refuses (its pixels may show
// identity: quarantined) fails to open, which fails that sub-operation
// only.
func (ar *Archive) deidentify(in *Instance, key string, cfg *deid.Config) {
	if !cfg.Profile.Has(deid.RetainUIDs) {
		in.SOPInstanceUID = deid.UIDFor(cfg.Secret, in.SOPInstanceUID)
		in.SeriesInstanceUID = deid.UIDFor(cfg.Secret, in.SeriesInstanceUID)
	}
	in.Size = 0
	in.Deidentified = cfg.Profile.Method()
	in.Open = func(ctx context.Context) (io.ReadCloser, error) { return ar.openDeidentified(ctx, key, cfg) }
}

// openDeidentified opens a stored object de-identified, after its Part 10
// header: it returns once the transform has decided (written its header)
// or failed.
func (ar *Archive) openDeidentified(ctx context.Context, key string, cfg *deid.Config) (io.ReadCloser, error) {
	rc, err := ar.Blobs.Open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("opening a stored object: %w", err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := deid.Transform(pw, rc, cfg)
		rc.Close()
		pw.CloseWithError(err)
		done <- err
	}()
	_, br, err := dicom.ReadFileHeader(pr, dicom.DefaultMetaLimit)
	if err != nil {
		pr.CloseWithError(err)
		if terr := <-done; terr != nil {
			return nil, terr
		}
		return nil, err
	}
	return &dataSetReader{Reader: br, c: pr}, nil
}
