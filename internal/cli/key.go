package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/ward-pacs/ward/audit"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/store/encblob"
)

var keyCmd = &command{
	name: "key", summary: "make and rotate the keys of encryption at rest",
	help: `Encryption at rest (docs/security.md) encrypts every stored object under a
data key of its own, wrapped by a key-encryption key (KEK) of a key file.
ward serve takes the key file with --encryption-key-file FILE or
[storage.encryption] key_file, or its content in ` + encblob.EnvKey + `.`,
	subs: []*command{
		{
			name: "init", summary: "make a new key file (mode 0600; never overwrites)",
			args: "FILE [--id ID]", minArgs: 1, maxArgs: 1,
			help: `Writes a key file holding one new, random KEK. Keep a copy of it apart
from the data and its backups: without it no object can be read.`,
			flags: keyInitFlags,
		},
		{
			name: "add", summary: "add a new KEK to a key file and make it current",
			args: "FILE [--id ID]", minArgs: 1, maxArgs: 1,
			help: `Adds a new, random KEK to the key file and marks it current: once ward
serve restarts with the file, new objects' data keys are wrapped by it.
The older KEKs stay in the file to read the objects they wrapped, until
ward key rotate has re-wrapped those under the current one.`,
			flags: keyAddFlags,
		},
		{
			name: "rotate", summary: "re-wrap every object's data key under the current KEK",
			args: "[--config FILE | --data DIR]",
			help: `Re-wraps the data key of every object not under the current KEK of the key
file (ward key add), without re-encrypting the object: it writes beside
the object a small key record (write-once storage, files and S3 alike,
never rewrites an object). Objects done are skipped, so an interrupted
run is resumed by running it again. Once it reports no failure, the older
KEKs may leave the key file. ward serve must be stopped. The start and the
outcome are recorded in the audit trail (Security Alert, Security
Configuration), with the operating-system user who ran it.`,
			flags: keyRotateFlags,
		},
	},
}

func keyIDFlag(fs *flag.FlagSet) *string {
	return fs.String("id", "", "the key's ID: 1 to 32 of a-z 0-9 - (default k1, k2, …)")
}

func keyInitFlags(fs *flag.FlagSet) runFunc {
	id := keyIDFlag(fs)
	return func(e *env, args []string) error {
		if *id == "" {
			*id = "k1"
		}
		if err := encblob.InitKeyFile(args[0], *id); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "key file %s made with key %s; keep a copy of it apart from the data and its backups\n", args[0], *id)
		return nil
	}
}

func keyAddFlags(fs *flag.FlagSet) runFunc {
	id := keyIDFlag(fs)
	return func(e *env, args []string) error {
		if *id == "" {
			ring, err := encblob.ReadKeyFile(args[0])
			if err != nil {
				return err
			}
			have := map[string]bool{}
			for _, k := range ring.IDs() {
				have[k] = true
			}
			for n := len(have) + 1; ; n++ {
				if c := "k" + strconv.Itoa(n); !have[c] {
					*id = c
					break
				}
			}
		}
		if err := encblob.AddKey(args[0], *id); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "key %s added to %s and made current; restart ward serve, then run ward key rotate\n", *id, args[0])
		return nil
	}
}

func keyRotateFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	return func(e *env, _ []string) error {
		c, err := df.load()
		if err != nil {
			return err
		}
		if c.Storage.Encryption.Keys() == "" {
			return errors.New("encryption at rest is off: no key file ([storage.encryption] key_file or " + encblob.EnvKey + ")")
		}
		ctx := context.Background()
		return offline(ctx, e, c, func(adm *admin.Admin) error {
			eb, ok := encblob.From(adm.Archive.Blobs)
			if !ok {
				return errors.New("the archive's blobs are not encrypted")
			}
			rep, err := RotateKeys(ctx, eb, adm.Record, adm.Node(), admin.Operator(), func(key string, err error) {
				fmt.Fprintf(e.stderr, "%s: %v\n", key, err)
			})
			fmt.Fprintf(e.stdout, "%d objects: %d re-wrapped under key %s, %d under it already, %d failed\n",
				rep.Objects, rep.Rewrapped, eb.Keyring().Current(), rep.Done, rep.Failed)
			if err == nil && rep.Failed > 0 {
				err = &exitError{code: exitFailed, err: fmt.Errorf("%d objects could not be re-wrapped: keep the older keys in the key file", rep.Failed)}
			}
			return err
		})
	}
}

// RotateKeys runs a key rotation on eb, recording its start and its
// outcome in the audit trail (operator names who asked).
func RotateKeys(ctx context.Context, eb *encblob.Blobs, record func(*audit.Message) error, ward audit.Node, operator string, problem func(string, error)) (encblob.RotateReport, error) {
	who := audit.Node{AETitle: "ward key rotate", ID: operator}
	cur := eb.Keyring().Current()
	if err := record(audit.SecurityConfigChanged(ward, who, "encryption key rotation to key "+cur+" started", time.Now())); err != nil {
		return encblob.RotateReport{}, fmt.Errorf("audit record: %w", err)
	}
	rep, err := eb.Rotate(ctx, problem, nil)
	what := fmt.Sprintf("encryption key rotation to key %s: %d objects, %d re-wrapped, %d under it already, %d failed", cur, rep.Objects, rep.Rewrapped, rep.Done, rep.Failed)
	if err != nil {
		what += "; interrupted (run it again to resume): " + err.Error()
	}
	if rerr := record(audit.SecurityConfigChanged(ward, who, what, time.Now())); rerr != nil && err == nil {
		err = fmt.Errorf("audit record: %w", rerr)
	}
	return rep, err
}
