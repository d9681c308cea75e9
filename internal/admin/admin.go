// Package admin is Ward's administration: the operations an operator runs
// on the archive beside the network services (study delete and export,
// verify, status), the admin socket on which a running ward serve takes
// them, and the client the CLI asks it with. internal/server composes it:
// it serves the socket with a Handler over its archive, and opens the
// archive for the same operations while ward serve is stopped.
package admin

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/dicom/deid"
	"github.com/ward-pacs/ward/store"
)

// Socket is the name, in the data directory, of the Unix socket on which
// a running ward serve takes administration requests (ward study
// delete/export/verify, ward backup, ward status, and the reload that
// ward peer and ward user ask for) from the user it runs as (or root).
// The data directory is 0700 and the socket 0600.
const Socket = "admin.sock"

// StudyRequest asks to delete, export or verify studies (verify: every
// study when none is named), or to back the archive up (into Out).
type StudyRequest struct {
	// "delete", "export", "verify", "backup", "status", "reload",
	// "retention-plan", "retention-run", "patient-plan" or
	// "patient-delete"
	Op      string   `json:"op"`
	Studies []string `json:"studies"`
	Reason  string   `json:"reason,omitempty"`   // delete: required
	Out     string   `json:"out,omitempty"`      // export, backup: absolute folder
	Media   string   `json:"media,omitempty"`    // export: usb, cd, dvd, email, uri
	MaxRate int64    `json:"max_rate,omitempty"` // verify, backup: bytes per second (0: no cap)
	// Deidentify (export) names a de-identification profile
	// (deid.ParseProfile); DeidSecret is the project's secret and
	// AcceptBurnedIn exports what the profile would quarantine.
	Deidentify     string `json:"deidentify,omitempty"`
	DeidSecret     []byte `json:"deid_secret,omitempty"`
	AcceptBurnedIn bool   `json:"accept_burned_in,omitempty"`
	// Patient (patient-plan, patient-delete) is the Patient ID whose
	// studies are listed or erased, Issuer its Issuer of Patient ID (nil:
	// any issuer).
	Patient string  `json:"patient,omitempty"`
	Issuer  *string `json:"issuer,omitempty"`
	// Vacuum (patient-delete): rewrite the whole index afterwards
	// (store.Scrubber).
	Vacuum bool `json:"vacuum,omitempty"`
	// Force (retention-run) deletes beyond [retention] max_percent;
	// MaxDeletions, when positive, replaces max_deletions.
	Force        bool `json:"force,omitempty"`
	MaxDeletions int  `json:"max_deletions,omitempty"`
}

// StudyResult is the outcome for one study.
type StudyResult struct {
	Study     string `json:"study"`
	Instances int    `json:"instances"`
	Error     string `json:"error,omitempty"`
	// De-identified exports: the study's new UID, and the instances
	// held back for their burned-in annotation risk.
	NewStudy    string `json:"new_study,omitempty"`
	Quarantined int    `json:"quarantined,omitempty"`
}

// MediaTypes are the export media a StudyRequest may name (PS3.16 CID 405).
var MediaTypes = map[string]*audit.Code{"usb": audit.MediaUSB, "cd": audit.MediaCD, "dvd": audit.MediaDVD, "email": audit.MediaEmail, "uri": audit.MediaURI}

// Check validates a request.
func (r *StudyRequest) Check() error {
	switch {
	case r.Op != "delete" && r.Op != "export" && r.Op != "verify" && r.Op != "backup" && r.Op != "status" && r.Op != "reload" &&
		r.Op != "retention-plan" && r.Op != "retention-run" && r.Op != "patient-plan" && r.Op != "patient-delete":
		return fmt.Errorf("unknown operation %q", r.Op)
	case r.Op == "status", r.Op == "reload", r.Op == "retention-plan":
		return nil
	case r.Op == "retention-run":
		if r.MaxDeletions < 0 {
			return errors.New("a negative number of deletions")
		}
		return nil
	case r.Op == "patient-plan", r.Op == "patient-delete":
		if strings.TrimSpace(r.Patient) == "" {
			return errors.New("no Patient ID given")
		}
		if r.Op == "patient-delete" && strings.TrimSpace(r.Reason) == "" {
			return errors.New("an erasure needs a reason (it is recorded in the audit trail)")
		}
		return nil
	case r.Op == "backup" && len(r.Studies) > 0:
		return errors.New("a backup is of the whole archive")
	case r.Op == "backup" && !filepath.IsAbs(r.Out):
		return errors.New("a backup needs an absolute folder")
	case len(r.Studies) == 0 && r.Op != "verify" && r.Op != "backup":
		return errors.New("no study given")
	case r.Op == "delete" && r.Reason == "":
		return errors.New("a deletion needs a reason (it is recorded in the audit trail)")
	case r.Op == "export" && !filepath.IsAbs(r.Out):
		return errors.New("an export needs an absolute folder")
	case r.MaxRate < 0:
		return errors.New("a negative rate")
	case r.Op == "export" && MediaTypes[r.Media] == nil:
		return fmt.Errorf("media %q: use usb, cd, dvd, email or uri", r.Media)
	case r.Deidentify != "" && r.Op != "export", r.Deidentify == "" && (len(r.DeidSecret) > 0 || r.AcceptBurnedIn):
		return errors.New("de-identification applies to an export only")
	case r.Deidentify != "":
		if _, err := deid.ParseProfile(r.Deidentify); err != nil {
			return err
		}
		if len(r.DeidSecret) < deid.MinSecret {
			return fmt.Errorf("a de-identified export needs the project's secret (at least %d bytes)", deid.MinSecret)
		}
	}
	return nil
}

// VerifyResult is the outcome of a verification: the counts and the
// first MaxVerifyProblems problems.
type VerifyResult struct {
	Report   archive.VerifyReport    `json:"report"`
	Problems []archive.VerifyProblem `json:"problems"`
}

// MaxVerifyProblems caps the problems a VerifyResult (or a BackupResult)
// lists (the report counts them all).
const MaxVerifyProblems = 10000

// BackupResult is the outcome of a backup: the counts and the first
// MaxVerifyProblems objects that could not be copied as recorded.
type BackupResult struct {
	Dir      string                  `json:"dir"`
	Report   archive.BackupReport    `json:"report"`
	Problems []archive.VerifyProblem `json:"problems"`
}

// Reloaded is what a running ward serve has in effect after a reload: the
// AE titles of its peers, the names of its users and the IDs of its API
// tokens not revoked.
type Reloaded struct {
	Peers  []string `json:"peers"`
	Users  []string `json:"users"`
	Tokens []string `json:"tokens"`
}

// Status is what ward status reports: no patient data, only counts.
type Status struct {
	Serving bool         `json:"serving"`
	DataDir string       `json:"data_dir"`
	Counts  store.Counts `json:"counts"`
	// Node is the ID of the node reporting, Capabilities those its store
	// resolved (store.Caps.Names).
	Node         string   `json:"node"`
	Capabilities []string `json:"capabilities"`
	// DeletionsHeld: a backup (of any node sharing the index) holds the
	// deletion of objects.
	DeletionsHeld bool `json:"deletions_held,omitempty"`
	// Disk of the objects: free and total bytes, the reserve below which
	// C-STOREs are refused, and whether they are (-1 where unknown).
	DiskFree      int64 `json:"disk_free"`
	DiskTotal     int64 `json:"disk_total"`
	DiskReserve   int64 `json:"disk_reserve"`
	StoresRefused bool  `json:"stores_refused"`
	// AwaitingDeletion counts objects of deleted or replaced instances not
	// yet removed (up to 1000: more reads as 1000).
	AwaitingDeletion int `json:"awaiting_deletion"`
	// AuditFailing is set while a running Ward cannot write its audit log
	// (why), and AuditRefusing when it refuses patient-data services
	// meanwhile ([audit] on_failure).
	AuditFailing  string `json:"audit_failing,omitempty"`
	AuditRefusing bool   `json:"audit_refusing,omitempty"`
}
