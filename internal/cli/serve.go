package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"

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
	httpListen := fs.String("http-listen", "", "HTTP (DICOMweb) listener HOST:PORT, or off (default "+config.DefaultWebListen+"; beyond loopback it needs [web] tls_cert and tls_key, or [dicom]'s)")
	aet := fs.String("aet", "", "Ward's AE title (default "+config.DefaultAETitle+")")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "", "log format: text or json")
	keyFile := fs.String("encryption-key-file", "", "key file for encryption at rest (ward key init makes one; also [storage.encryption] key_file, or the key in "+encblob.EnvKey+")")
	minFree := fs.String("min-free", "", "free space kept in reserve on the objects' disk, e.g. 2GiB; C-STOREs are refused below it (0: none; default 1GiB, or 5% of a smaller disk)")
	return func() (*config.Config, error) {
		c, err := df.load()
		if err != nil {
			return nil, err
		}
		for flag, dst := range map[*string]*string{listen: &c.DICOM.Listen, tlsListen: &c.DICOM.TLSListen,
			tlsCert: &c.DICOM.TLSCert, tlsKey: &c.DICOM.TLSKey, tlsClientCA: &c.DICOM.TLSClientCA, tlsCRL: &c.DICOM.TLSCRL,
			httpListen: &c.Web.Listen, aet: &c.AETitle, logLevel: &c.Log.Level, logFormat: &c.Log.Format, minFree: &c.Storage.MinFree, keyFile: &c.Storage.Encryption.KeyFile} {
			if *flag != "" {
				*dst = *flag
			}
		}
		if *anyAE {
			c.DICOM.LoopbackAnyAE = true
		}
		return c, nil
	}, df.file
}

var serveCmd = &command{
	name: "serve", summary: "run the archive (DIMSE and DICOMweb)", args: "[flags]",
	help: `Runs the archive on the data directory (--data, default ` + config.DefaultDataDir + `) with the
configuration DATA/ward.toml (or --config FILE) and the flags below
applied over it, until SIGINT or SIGTERM. SIGHUP reloads the peers,
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	// Load is also what ward peer and ward user ask for on the admin
	// socket: their changes take effect at once.
	s := &server.Server{Config: c, Logger: log, Load: load, FixPermissions: fixPerms, ConfigFile: cfgFile, SetupOut: e.stderr, FetchViewer: os.Getenv("WARD_VIEWER_FETCH") != "off"}
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
