package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"syscall"
	"time"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/internal/server"
	"github.com/ward-pacs/ward/store/encblob"
)

// loadConfig reads --config (or DATA/ward.toml when it exists) and applies
// --data over it.
func loadConfig(configPath, dataDir string) (c *config.Config, err error) {
	defer func() {
		if c != nil {
			c.Storage.Encryption.Key = envEncryptionKey()
		}
	}()
	if configPath != "" {
		c, err := config.Load(configPath, false)
		if err != nil {
			return nil, err
		}
		if dataDir != "" {
			c.DataDir = dataDir
		}
		return c, nil
	}
	dir := dataDir
	if dir == "" {
		dir = config.DefaultDataDir
	}
	c, err = config.Load(filepath.Join(dir, config.ConfigFileName), true)
	if err != nil {
		return nil, err
	}
	c.DataDir = dir
	return c, nil
}

// envEncryptionKey is the key given in the environment (encblob.EnvKey),
// read once and then removed from the environment, so that no child
// process and no later reader of the environment finds it.
var envEncryptionKey = sync.OnceValue(func() string {
	v, ok := os.LookupEnv(encblob.EnvKey)
	if ok {
		os.Unsetenv(encblob.EnvKey)
	}
	return v
})

// dataFlags are --config and --data, which locate the configuration and
// the data directory.
type dataFlags struct{ config, data *string }

// addDataFlags defines --config and --data on fs.
func addDataFlags(fs *flag.FlagSet) dataFlags {
	return dataFlags{
		config: fs.String("config", "", "configuration file (TOML; default: DATA/ward.toml when present)"),
		data:   fs.String("data", "", "data directory (default "+config.DefaultDataDir+")"),
	}
}

// load reads the configuration the flags name (loadConfig).
func (f dataFlags) load() (*config.Config, error) { return loadConfig(*f.config, *f.data) }

// serveFlags defines the flags of `ward serve` on fs and returns the
// function that loads the configuration with them applied over it (also
// used by `ward config check`, so that it checks what serve would run).
func serveFlags(fs *flag.FlagSet) func() (*config.Config, error) {
	load, _ := serveFlagsFile(fs)
	return load
}

// serveFlagsFile is serveFlags that also returns the function giving the
// configuration file's path (for the first-run set-up's user).
func serveFlagsFile(fs *flag.FlagSet) (func() (*config.Config, error), func() string) {
	df := addDataFlags(fs)
	listen := fs.String("dicom-listen", "", "DIMSE listener HOST:PORT (default "+config.DefaultDICOMListen+"; beyond loopback it needs [dicom] plaintext_networks)")
	tlsListen := fs.String("dicom-tls-listen", "", "DIMSE over TLS listener HOST:PORT (2762 is the conventional port; default none)")
	anyAE := fs.Bool("loopback-any-ae", false, "let any calling AE title use every service over the plain loopback listener (local tools and development only; refused when a listener is not loopback)")
	tlsCert := fs.String("tls-cert", "", "server certificate for the TLS listener (PEM)")
	tlsKey := fs.String("tls-key", "", "private key of the server certificate (PEM)")
	tlsClientCA := fs.String("tls-client-ca", "", "CA certificates (PEM); when set, TLS clients must present a certificate they issued")
	tlsCRL := fs.String("tls-crl", "", "certificate revocation lists (PEM or DER) of those CAs; a certificate they list is refused (ward pki revoke makes one)")
	metricsListen := fs.String("metrics-listen", "", "metrics listener HOST:PORT (/metrics, /healthz, /readyz), or off (default off; 9464 by convention; beyond loopback it needs TLS, and /metrics a bearer token)")
	httpListen := fs.String("http-listen", "", "HTTP (DICOMweb) listener HOST:PORT, or off (default "+config.DefaultWebListen+"; beyond loopback it needs [web] tls_cert and tls_key, or [dicom]'s)")
	aet := fs.String("aet", "", "Ward's AE title (default "+config.DefaultAETitle+")")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "", "log format: text or json")
	index := fs.String("index", "", "the index, as a URL: postgres://USER@HOST/DATABASE (a cluster's shared index; the password from PGPASSWORD or ~/.pgpass, never in the URL); default the SQLite index in the data directory")
	blobs := fs.String("blobs", "", "the objects' store, as a URL: s3://BUCKET/PREFIX?endpoint=URL&region=R (keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the shared credentials file); default files in the data directory")
	keyFile := fs.String("encryption-key-file", "", "key file for encryption at rest (ward key init makes one; also [storage.encryption] key_file, or the key in "+encblob.EnvKey+")")
	minFree := fs.String("min-free", "", "free space kept in reserve on the objects' disk, e.g. 2GiB; C-STOREs are refused below it (0: none; default 1GiB, or 5% of a smaller disk)")
	return func() (*config.Config, error) {
		c, err := df.load()
		if err != nil {
			return nil, err
		}
		for flag, dst := range map[*string]*string{listen: &c.DICOM.Listen, tlsListen: &c.DICOM.TLSListen,
			tlsCert: &c.DICOM.TLSCert, tlsKey: &c.DICOM.TLSKey, tlsClientCA: &c.DICOM.TLSClientCA, tlsCRL: &c.DICOM.TLSCRL,
			httpListen: &c.Web.Listen, metricsListen: &c.Metrics.Listen, aet: &c.AETitle, logLevel: &c.Log.Level, logFormat: &c.Log.Format, minFree: &c.Storage.MinFree, keyFile: &c.Storage.Encryption.KeyFile} {
			if *flag != "" {
				*dst = *flag
			}
		}
		if *anyAE {
			c.DICOM.LoopbackAnyAE = true
		}
		// A backend given as a flag replaces the file's, DSN included.
		if *index != "" {
			c.Storage.Index, c.Storage.IndexDSN = *index, ""
		}
		if *blobs != "" {
			c.Storage.Blobs, c.Storage.BlobsDSN = *blobs, ""
		}
		return c, nil
	}, df.file
}

var serveCmd = &command{
	name: "serve", summary: "run the archive (DIMSE and DICOMweb)", args: "[flags]",
	help: `Runs the archive on the data directory (--data, default ` + config.DefaultDataDir + `) with the
configuration DATA/ward.toml (or --config FILE) and the flags below
applied over it, until SIGINT or SIGTERM (with [metrics] drain, SIGTERM
first drains: /readyz answers 503 for that long while Ward goes on
serving, then it stops; a second signal stops it at once). SIGHUP reloads the peers,
users and API tokens. The web listener serves the OHIF viewer at / (on
the first run, with npm at hand, ward serve fetches it into DATA/viewer
and says so: see ward viewer). It refuses to start with a setting 'ward config check' lists as
refused, and with a data directory other local users can reach.`,
	flags: serveFlagsRun,
}

func serveFlagsRun(fs *flag.FlagSet) runFunc {
	load, file := serveFlagsFile(fs)
	fixPerms := fs.Bool("fix-permissions", false, "close a data directory that other local users can reach (files 0600, directories 0700, owned by the user Ward runs as) instead of refusing to start")
	return func(e *env, _ []string) error { return serve(e, load, file(), *fixPerms) }
}

func serve(e *env, load func() (*config.Config, error), cfgFile string, fixPerms bool) error {
	c, err := load()
	if err != nil {
		return err
	}
	log, err := newLogger(e.stderr, c.Log.Level, c.Log.Format)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if path := os.Getenv("WARD_CPUPROFILE"); path != "" {
		// A CPU profile of the whole run, for performance work.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("WARD_TRACE"); path != "" {
		// An execution trace of the whole run (go tool trace): where
		// stores wait, for performance work.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	// Load is also what ward peer and ward user ask for on the admin
	// socket: their changes take effect at once.
	s := &server.Server{Config: c, Logger: log, Load: load, FixPermissions: fixPerms, ConfigFile: cfgFile, SetupOut: e.stderr, FetchViewer: os.Getenv("WARD_VIEWER_FETCH") != "off", Version: versionString()}
	// A signal during Open (recovery may take long) stops it at once.
	go stopOnSignal(s, sigs, c.Metrics.Drain.Duration, stop)
	if err := s.Open(ctx); err != nil {
		return fmt.Errorf("not starting: %w", err)
	}
	// SIGHUP reloads the peers and users, with the same flags applied
	// over the file (ward peer and ward user ask over the admin socket).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading the configuration")
				if _, err := s.ReloadConfig("SIGHUP to ward serve"); err != nil {
					log.Error("configuration not reloaded; the previous one stays in effect", "err", err.Error())
				}
			}
		}
	}()
	return s.Serve(ctx)
}

// stopOnSignal stops s (stop) at the first SIGINT or SIGTERM; with a drain,
// SIGTERM to a serving s first has it drain for that long (its /readyz
// answers 503 while it serves on, so that the load balancer moves new
// connections away), unless another signal comes.
func stopOnSignal(s *server.Server, sigs <-chan os.Signal, drain time.Duration, stop func()) {
	sig, ok := <-sigs
	if ok && sig == syscall.SIGTERM && drain > 0 && s.Serving() {
		s.Drain()
		t := time.NewTimer(drain)
		select {
		case <-t.C:
		case <-sigs:
		}
		t.Stop()
	}
	stop()
}
