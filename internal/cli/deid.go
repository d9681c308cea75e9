package cli

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/ward-pacs/ward/dicom/deid"
	"github.com/ward-pacs/ward/durable"
)

var deidCmd = &command{
	name: "deid", summary: "the secret of de-identified exports (ward study export --deidentify)",
	help: `De-identified exports (ward study export --deidentify, docs/deidentification.md)
remap UIDs, shift dates and name patients under a per-project secret kept
in a file: ward deid secret makes one.`,
	subs: []*command{
		{
			name: "secret", summary: "make a project's de-identification secret",
			args: "FILE", minArgs: 1, maxArgs: 1,
			help: `Writes 32 random bytes, hex-encoded, into FILE (mode 0600; an existing
file is never overwritten). ward study export --deidentify --deid-secret-file
FILE remaps UIDs, shifts dates and names patients under it: the same secret
gives the same UIDs, dates and pseudonyms in every export, so that a
research set stays linkable across exports; without it they can be neither
reversed nor recomputed. Use one secret per project, keep it from the
recipients of the exports, and back it up: a lost secret cannot link later
exports to earlier ones.`,
			flags: func(fs *flag.FlagSet) runFunc {
				return func(e *env, args []string) error {
					return writeDeidSecret(e, args[0])
				}
			},
		},
	},
}

func writeDeidSecret(e *env, path string) error {
	secret, err := deid.NewSecret()
	if err != nil {
		return err
	}
	if err := durable.WriteNew(path, []byte(secret), 0o600); err != nil {
		return fmt.Errorf("the secret file: %w (an existing secret is never replaced)", err)
	}
	if err := durable.Sync(filepath.Dir(path)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "de-identification secret written to %s (0600); back it up and keep it from the exports' recipients\n", path)
	return nil
}
