package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/store"
)

// Migrate copies the stopped Ward's archive into dst (archive.Migrate), or
// with o.VerifyOnly checks it there. dest names dst's stores, without
// credentials. The objects copied are recorded in the source's audit
// trail as Export (PS3.15 A.5.3.5) to dest (media type URI), one message
// per patient, with the studies and their instance counts per SOP class,
// operator naming who ran it; copied is copied, so they are recorded
// whether or not the run finishes. A verification copies nothing and
// records nothing.
func (a *Admin) Migrate(ctx context.Context, operator string, dst *archive.Archive, dest string, o archive.MigrateOptions) (archive.MigrateReport, error) {
	var rerr error
	exports := &backupAudit{
		record: func(m *audit.Message) {
			if err := a.Record(m); err != nil {
				rerr = errors.Join(rerr, fmt.Errorf("audit record: %w", err))
			}
		},
		ward: a.Node(), who: audit.Node{AETitle: "ward migrate", ID: operator},
		media: audit.Media{ID: dest, Type: audit.MediaURI}, studies: map[string]*audit.Study{},
	}
	if !o.VerifyOnly {
		next := o.Copied
		o.Copied = func(in *store.Instance) {
			exports.copied(in)
			if next != nil {
				next(in)
			}
		}
	}
	rep, err := a.Archive.Migrate(ctx, dst, o)
	exports.flush()
	if a.log != nil {
		rerr = errors.Join(rerr, a.log.Sync())
	}
	return rep, errors.Join(err, rerr)
}
