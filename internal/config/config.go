// Package config holds Ward's configuration: the TOML file documented in
// docs/configuration.md, with flags applied over it. The zero value is the
// secure default: loopback only, timeouts on, the called AE title checked.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/dustin/go-humanize"
)

// Defaults.
const (
	DefaultAETitle     = "WARD"
	DefaultDataDir     = "./ward-data"
	DefaultDICOMListen = "127.0.0.1:11112"
	ConfigFileName     = "ward.toml"
	// DefaultLockoutAfter is [dicom] lockout_after when 0.
	DefaultLockoutAfter = 5
	// The connection budget before admission ([dicom] max_pending,
	// max_pending_per_source, pending_peer_reserve, first_pdu_timeout)
	// when 0.
	DefaultMaxPending          = 64
	DefaultMaxPendingPerSource = 8
	DefaultPendingPeerReserve  = 16
	DefaultFirstPDUTimeout     = 10 * time.Second
)

// Duration is a time.Duration written as "30s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Config is the whole configuration.
type Config struct {
	// AETitle is Ward's AE title; associations called to any other title
	// are rejected.
	AETitle string `toml:"aet"`
	// DataDir holds the index, the objects and (by default) this file.
	DataDir string `toml:"data"`
	// NodeID names this Ward among the nodes that share one store, in
	// logs and audit records: 1 to 64 of A-Z a-z 0-9 _ -. Empty: the ID
	// generated once and kept in DATA/node-id.
	NodeID  string  `toml:"node_id"`
	DICOM   DICOM   `toml:"dicom"`
	Web     Web     `toml:"web"`
	Storage Storage `toml:"storage"`
	Query   Query   `toml:"query"`
	Log     Log     `toml:"log"`
	Audit   Audit   `toml:"audit"`
	// Metrics is the operations listener: metrics, health, readiness
	// (metrics.go).
	Metrics Metrics `toml:"metrics"`
	// Identity configures user identity negotiation (PS3.7 D.3.3.7).
	Identity Identity `toml:"identity"`
	// Users are the accounts for username + passcode identity ([[users]]
	// tables, edited by `ward user`); only slow hashes are stored.
	Users []User `toml:"users"`
	// Peers are the registered DICOM peers ([[peers]] tables), edited by
	// `ward peer` and reloaded by a running `ward serve` at once (admin
	// socket) or on SIGHUP.
	Peers []Peer `toml:"peers"`
	// Deidentify holds the project secret of the peers that receive
	// de-identified objects (Peer.Deidentify).
	Deidentify Deidentify `toml:"deidentify"`
	// Retention deletes studies by age (retention.go).
	Retention Retention `toml:"retention"`
}

// Deidentify is the [deidentify] section.
type Deidentify struct {
	// SecretFile is the de-identification secret (mode 0600; ward deid
	// secret makes one), required when a peer has deidentify.
	SecretFile string `toml:"secret_file"`
}

// DICOM is the DIMSE listener's configuration.
type DICOM struct {
	// Listen is HOST:PORT of the plain DIMSE listener. An address other
	// than loopback needs PlaintextNetworks.
	Listen string `toml:"listen"`
	// MaxPDULength is the largest P-DATA-TF PDU Ward accepts (bytes).
	MaxPDULength uint32 `toml:"max_pdu_length"`
	// ARTIMTimeout bounds association set-up and close.
	ARTIMTimeout Duration `toml:"artim_timeout"`
	// IdleTimeout aborts an association idle for this long: silent while
	// Ward waits for the peer (work for the peer does not count).
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxAssociations bounds concurrent admitted associations: a
	// connection takes one of these slots only once the policy has
	// admitted its association request.
	MaxAssociations int `toml:"max_associations"`
	// MaxPending bounds the connections not yet admitted (TLS handshake
	// under way, A-ASSOCIATE-RQ not yet read or being negotiated), on both
	// listeners together. 0: DefaultMaxPending.
	MaxPending int `toml:"max_pending"`
	// MaxPendingPerSource bounds those connections per source address
	// (twice that for a source a registered peer is bound to). 0:
	// DefaultMaxPendingPerSource.
	MaxPendingPerSource int `toml:"max_pending_per_source"`
	// PendingPeerReserve is the part of MaxPending that only sources a
	// registered peer is bound to (by host address or network) may use.
	// 0: DefaultPendingPeerReserve; negative: none.
	PendingPeerReserve int `toml:"pending_peer_reserve"`
	// FirstPDUTimeout bounds the time from accepting a connection to
	// reading its A-ASSOCIATE-RQ, TLS handshake included. 0:
	// DefaultFirstPDUTimeout; at most ARTIMTimeout.
	FirstPDUTimeout Duration `toml:"first_pdu_timeout"`
	// TransferSyntaxes is Ward's preference order for accepting storage
	// contexts. Empty (the default) follows the peer's order: an object is
	// then stored as the peer prefers to send it, never converted or
	// decompressed by the sender on Ward's account. Syntaxes not listed are
	// still accepted, ranked after the listed ones in the peer's order;
	// encapsulated ones only when AcceptCompressed is true.
	TransferSyntaxes []string `toml:"transfer_syntaxes"`
	// AcceptCompressed accepts every encapsulated transfer syntax for
	// storage (objects are stored and sent as received).
	AcceptCompressed *bool `toml:"accept_compressed"`
	// PrivateSOPClasses are accepted for storage in addition to every
	// standard Storage SOP Class.
	PrivateSOPClasses []string `toml:"private_sop_classes"`
	// TLSListen is HOST:PORT of the DIMSE over TLS listener (PS3.15 B.12;
	// 2762 is the conventional port). Empty (the default): no TLS
	// listener. Every peer calling there is checked (the loopback any-AE
	// opt-in never applies).
	TLSListen string `toml:"tls_listen"`
	// TLSCert and TLSKey are the server certificate (PEM, chain allowed)
	// and its private key; both are required with TLSListen.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// TLSClientCA, when set, is a PEM file of CA certificates: every TLS
	// client must present a certificate that verifies against it.
	TLSClientCA string `toml:"tls_client_ca"`
	// TLSPeerCA verifies the server certificates of peers Ward calls over
	// TLS (peers with tls = true); empty: the system's roots.
	TLSPeerCA string `toml:"tls_peer_ca"`
	// TLSCRL is a file of certificate revocation lists (PEM, one or more
	// "X509 CRL" blocks, or one DER list), each signed by a CA of
	// TLSClientCA or TLSPeerCA. A certificate it lists is refused in the
	// TLS handshake, from a calling peer or a peer Ward calls. The file is
	// read again when it changes.
	TLSCRL string `toml:"tls_crl"`
	// TLSClientCert and TLSClientKey are the certificate Ward presents when
	// it calls a peer over TLS (e.g. made by `ward pki issue WARD`); empty:
	// none (peers that require one refuse).
	TLSClientCert string `toml:"tls_client_cert"`
	TLSClientKey  string `toml:"tls_client_key"`
	// PlaintextNetworks acknowledges plain (non-TLS) DIMSE on a listener
	// that is not loopback: associations on it are accepted only from
	// these source networks (CIDRs). Without it, a non-loopback plain
	// listener is refused at start. Ward warns at every start while it is
	// set.
	PlaintextNetworks []string `toml:"plaintext_networks"`
	// LoopbackAnyAE is the named opt-in that lets any calling AE title use
	// every service over the plain loopback listener (development, local
	// tools). It never applies to the TLS listener and is refused whenever
	// a listener is not loopback.
	LoopbackAnyAE bool `toml:"loopback_any_ae"`
	// ProxyFrom lists the load balancers (addresses or CIDRs) in front of
	// the DIMSE listeners: a connection from one of them must open with a
	// PROXY protocol header (v2 or v1), whose source address Ward then
	// uses; a connection from anywhere else is never read for one (proxy.go
	// in internal/config; internal/server/proxy.go). Empty: none.
	ProxyFrom []string `toml:"proxy_from"`
	// MaxAssociationsPerPeer bounds concurrent associations of one calling
	// AE title (a peer's own max_associations overrides it).
	MaxAssociationsPerPeer int `toml:"max_associations_per_peer"`
	// LockoutAfter failed associations from one source address in a row
	// lock that source out, for LockoutBase, doubling at each further
	// failure up to LockoutMax. 0 uses the default; negative disables.
	LockoutAfter int      `toml:"lockout_after"`
	LockoutBase  Duration `toml:"lockout_base"`
	LockoutMax   Duration `toml:"lockout_max"`
}

// Identity configures user identity negotiation.
type Identity struct {
	// JWKS is the key set that verifies JSON Web Tokens: a file path or an
	// https:// URL. Empty: JWT identities are refused.
	JWKS string `toml:"jwks"`
	// JWTIssuer and JWTAudience are required claims (iss, aud) of every
	// token; both must be set with JWKS.
	JWTIssuer   string `toml:"jwt_issuer"`
	JWTAudience string `toml:"jwt_audience"`
	// ClockSkew is the leeway on exp/nbf/iat (default 60s, at most 5m).
	ClockSkew Duration `toml:"clock_skew"`
}

// User is an account for username + passcode identity.
type User struct {
	Name string `toml:"name"`
	// Hash is the passcode's argon2id (or bcrypt) hash in its standard
	// encoded form; never the passcode itself.
	Hash string `toml:"hash"`
	// Roles are what the user may do through the front ends that
	// authenticate users (viewer, uploader, admin; policy.RolePermissions).
	// A user without roles is a DIMSE identity only: its tokens grant
	// nothing.
	Roles []string `toml:"roles,omitempty"`
	// Deidentify names a de-identification profile (as a peer's): what
	// the user retrieves through DICOMweb leaves de-identified, and its
	// searches and metadata requests are refused.
	Deidentify string `toml:"deidentify,omitempty"`
}

// Query configures C-FIND.
type Query struct {
	// MaxResults caps the matches of one C-FIND (default 1000; the final
	// response says when the cap cut the matches). Negative: no cap.
	MaxResults int `toml:"max_results"`
	// PNCaseSensitive makes person name matching case-sensitive (the
	// default is case-insensitive).
	PNCaseSensitive bool `toml:"pn_case_sensitive"`
}

// Storage is the archive's configuration.
type Storage struct {
	// OnDuplicate: "replace" (default), "keep" or "reject".
	OnDuplicate string `toml:"on_duplicate"`
	// Index and Blobs name the backends; empty means the embedded default
	// (sqlite and fs in DataDir). A value with "://" is a URL whose
	// scheme names the backend (postgres://, postgresql://; s3://) and
	// which is the whole DSN (storage.go); else IndexDSN and BlobsDSN are
	// the backends' DSNs. Never a password or key in either.
	Index    string `toml:"index"`
	IndexDSN string `toml:"index_dsn"`
	Blobs    string `toml:"blobs"`
	BlobsDSN string `toml:"blobs_dsn"`
	// MinFree is the free space kept in reserve on the disk of the
	// objects: a C-STORE arriving when less is free is refused (0xA700)
	// before anything is written. A size ("2GiB", "500MB", bytes); "0"
	// turns the reserve off. Empty: 1 GiB, or 5 % of a smaller disk.
	MinFree string `toml:"min_free"`
	// Encryption turns encryption at rest on (docs/security.md).
	Encryption Encryption `toml:"encryption"`
}

// Encryption is [storage.encryption]: the key file of encryption at rest
// (store/encblob; ward key init makes one).
type Encryption struct {
	// KeyFile is the key file (mode 0600).
	KeyFile string `toml:"key_file"`
	// Key is a key file's content taken from the environment
	// (WARD_ENCRYPTION_KEY), never from a configuration file.
	Key string `toml:"-"`
}

// Keys is what configures the "encrypt" blobs wrapper: the key file's
// path, or the key from the environment; "" when encryption is off.
func (e Encryption) Keys() string {
	if e.KeyFile != "" {
		return e.KeyFile
	}
	return e.Key
}

// DefaultMinFree and DefaultMinFreeShare are the reserve when min_free is
// not set: 1 GiB, lowered to 5 % of a disk smaller than 20 GiB.
const (
	DefaultMinFree      = 1 << 30
	DefaultMinFreeShare = 0.05
)

// MinFreeBytes is the reserve of Storage.MinFree in bytes, and the share
// of the disk it is capped at (0: none).
func (s *Storage) MinFreeBytes() (int64, float64, error) {
	if strings.TrimSpace(s.MinFree) == "" {
		return DefaultMinFree, DefaultMinFreeShare, nil
	}
	n, err := humanize.ParseBytes(s.MinFree)
	if err != nil || n > 1<<62 {
		return 0, 0, fmt.Errorf("storage min_free %q: give a size such as 2GiB or 500MB, or 0 for no reserve", s.MinFree)
	}
	return int64(n), 0, nil
}

// Audit configures the audit trail (PS3.15 A.5).
type Audit struct {
	// Enabled records audit messages in the local hash-chained log (nil:
	// true; turning it off is logged as a warning at every start).
	Enabled *bool `toml:"enabled"`
	// Path is the log's directory (default DATA/audit).
	Path string `toml:"path"`
	// Syslog forwards every record to a collector by syslog over TLS
	// (PS3.15 A.6, RFC 5424 over RFC 5425): HOST:PORT (6514 is the
	// conventional port). Empty: local log only.
	Syslog string `toml:"syslog"`
	// SyslogCA verifies the collector's certificate (PEM; empty: the
	// system roots). SyslogCert and SyslogKey, when set, are Ward's client
	// certificate for collectors that require one.
	SyslogCA   string `toml:"syslog_ca"`
	SyslogCert string `toml:"syslog_cert"`
	SyslogKey  string `toml:"syslog_key"`
	// SyslogQueueMax bounds the on-disk queue of records not yet accepted
	// by the collector (bytes; default 64 MiB). When it is full, new
	// records stay in the local log only and the collector is sent a gap
	// message in their place; DIMSE traffic never waits.
	SyslogQueueMax int64 `toml:"syslog_queue_max"`
	// SyslogCheckpoints sends the chain's head to the collector after the
	// records (nil: true), for `ward audit verify --checkpoints`.
	SyslogCheckpoints *bool `toml:"syslog_checkpoints"`
	// KeyFile is the key that signs the log's records (HMAC-SHA256),
	// made 0600 on first start when missing (default DATA/audit.key, apart
	// from the log's directory).
	KeyFile string `toml:"key_file"`
	// OnFailure says what Ward does while the log cannot be written:
	// "refuse" (the default) refuses C-STORE, C-FIND, C-MOVE and C-GET
	// (C-ECHO still answers) until it can; "continue" serves on, with
	// the records held in memory and then counted as lost.
	OnFailure string `toml:"on_failure"`
}

// Audit on_failure values.
const (
	AuditRefuse   = "refuse"
	AuditContinue = "continue"
)

// AuditKeyFile is the audit log's key file.
func (c *Config) AuditKeyFile() string {
	if c.Audit.KeyFile != "" {
		return c.Audit.KeyFile
	}
	return filepath.Join(c.DataDir, "audit.key")
}

// AuditRefuses reports whether Ward refuses the services that touch patient
// data while the audit log cannot be written.
func (c *Config) AuditRefuses() bool { return c.Audit.OnFailure != AuditContinue }

// AuditCheckpoints reports whether checkpoints go to the collector.
func (c *Config) AuditCheckpoints() bool {
	return c.Audit.SyslogCheckpoints == nil || *c.Audit.SyslogCheckpoints
}

// AuditEnabled reports whether the audit trail is on.
func (c *Config) AuditEnabled() bool { return c.Audit.Enabled == nil || *c.Audit.Enabled }

// AuditDir is the audit log's directory.
func (c *Config) AuditDir() string {
	if c.Audit.Path != "" {
		return c.Audit.Path
	}
	return filepath.Join(c.DataDir, "audit")
}

// Log configures structured logs.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// Default returns the default configuration.
func Default() *Config {
	t := true
	return &Config{
		AETitle: DefaultAETitle,
		DataDir: DefaultDataDir,
		DICOM: DICOM{
			Listen:                 DefaultDICOMListen,
			MaxPDULength:           256 * 1024,
			ARTIMTimeout:           Duration{30 * time.Second},
			IdleTimeout:            Duration{5 * time.Minute},
			MaxAssociations:        64,
			MaxPending:             DefaultMaxPending,
			MaxPendingPerSource:    DefaultMaxPendingPerSource,
			PendingPeerReserve:     DefaultPendingPeerReserve,
			FirstPDUTimeout:        Duration{DefaultFirstPDUTimeout},
			MaxAssociationsPerPeer: 16,
			LockoutAfter:           5,
			LockoutBase:            Duration{2 * time.Second},
			LockoutMax:             Duration{10 * time.Minute},
			AcceptCompressed:       &t,
		},
		Web:      Web{Listen: DefaultWebListen},
		Storage:  Storage{OnDuplicate: "replace"},
		Query:    Query{MaxResults: 1000},
		Log:      Log{Level: "info", Format: "text"},
		Identity: Identity{ClockSkew: Duration{60 * time.Second}},
	}
}

// Load reads a TOML file over the defaults. A missing file is not an error
// when optional is true.
func Load(path string, optional bool) (*Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if optional && errors.Is(err, os.ErrNotExist) {
			return c, nil
		}
		return nil, fmt.Errorf("reading config: %w", err)
	}
	md, err := toml.Decode(string(b), c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return c, nil
}

// ErrNotLoopback: a listener address outside loopback.
var ErrNotLoopback = errors.New("not a loopback address")

// ErrTLSIncomplete: a TLS listener without a certificate or key.
var ErrTLSIncomplete = errors.New("a TLS listener needs tls_cert and tls_key (ward pki init makes them for a site without a PKI)")

// Validate checks the configuration and the rules Ward enforces at start.
func (c *Config) Validate() error {
	if c.AETitle == "" || len(c.AETitle) > 16 || strings.TrimSpace(c.AETitle) != c.AETitle || strings.ContainsAny(c.AETitle, `\`) {
		return fmt.Errorf("aet %q: an AE title is 1 to 16 characters, without leading or trailing spaces or backslash", c.AETitle)
	}
	for _, r := range c.AETitle {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("aet %q: only printable ASCII characters are allowed", c.AETitle)
		}
	}
	if c.NodeID != "" && !ValidNodeID(c.NodeID) {
		return fmt.Errorf("node_id %q: a node ID is 1 to 64 of A-Z a-z 0-9 _ -", c.NodeID)
	}
	if err := c.validateProxyFrom(); err != nil {
		return err
	}
	plainLoopback := CheckLoopback(c.DICOM.Listen) == nil
	if !plainLoopback {
		if len(c.DICOM.PlaintextNetworks) == 0 {
			return fmt.Errorf("dicom listen %s: %w: plain DIMSE beyond loopback is refused unless [dicom] plaintext_networks acknowledges it for named source networks (CIDRs); use the TLS listener (tls_listen) instead — a DICOM port open to the network in clear text is how 1.19 billion images came to be readable by anyone", c.DICOM.Listen, ErrNotLoopback)
		}
	}
	for _, n := range c.DICOM.PlaintextNetworks {
		pf, err := netip.ParsePrefix(n)
		if err != nil {
			return fmt.Errorf("dicom plaintext_networks: %q is not a CIDR (e.g. 10.20.0.0/16)", n)
		}
		if pf.Bits() == 0 {
			return fmt.Errorf("dicom plaintext_networks: %q is every address: name the networks the modalities are on", n)
		}
	}
	if coverOf(c.DICOM.PlaintextNetworks).every() {
		return fmt.Errorf("dicom plaintext_networks: together %s are every address: name the networks the modalities are on", strings.Join(c.DICOM.PlaintextNetworks, ", "))
	}
	tlsLoopback := true
	if c.DICOM.TLSListen != "" {
		if _, _, err := net.SplitHostPort(c.DICOM.TLSListen); err != nil {
			return fmt.Errorf("dicom tls_listen %s: %w", c.DICOM.TLSListen, err)
		}
		tlsLoopback = CheckLoopback(c.DICOM.TLSListen) == nil
		if c.DICOM.TLSCert == "" || c.DICOM.TLSKey == "" {
			return fmt.Errorf("dicom tls_listen %s: %w", c.DICOM.TLSListen, ErrTLSIncomplete)
		}
	}
	if c.DICOM.TLSCRL != "" && c.DICOM.TLSClientCA == "" && c.DICOM.TLSPeerCA == "" {
		return errors.New("dicom tls_crl: a revocation list is verified against the CAs of tls_client_ca or tls_peer_ca; set one of them")
	}
	if (c.DICOM.TLSClientCert == "") != (c.DICOM.TLSClientKey == "") {
		return errors.New("dicom tls_client_cert and tls_client_key go together")
	}
	if c.DICOM.LoopbackAnyAE && (!plainLoopback || !tlsLoopback) {
		return errors.New("dicom loopback_any_ae: refused while a listener is not on loopback (any calling AE may use every service: that opt-in is for a machine's own tools only)")
	}
	if c.DICOM.MaxAssociationsPerPeer < 0 {
		return fmt.Errorf("dicom max_associations_per_peer must not be negative")
	}
	if c.DICOM.LockoutAfter >= 0 && (c.DICOM.LockoutBase.Duration <= 0 || c.DICOM.LockoutMax.Duration < c.DICOM.LockoutBase.Duration) {
		return fmt.Errorf("dicom lockout_base must be positive and lockout_max at least lockout_base")
	}
	switch c.Audit.OnFailure {
	case "", AuditRefuse, AuditContinue:
	default:
		return fmt.Errorf("audit on_failure %q: use refuse or continue", c.Audit.OnFailure)
	}
	switch c.Storage.OnDuplicate {
	case "replace", "keep", "reject":
	default:
		return fmt.Errorf("storage on_duplicate %q: use replace, keep or reject", c.Storage.OnDuplicate)
	}
	if c.Storage.Encryption.KeyFile != "" && c.Storage.Encryption.Key != "" {
		return errors.New("storage.encryption: a key file and a key in the environment (WARD_ENCRYPTION_KEY) are both given: give one")
	}
	if _, _, err := c.Storage.MinFreeBytes(); err != nil {
		return err
	}
	if err := c.validateStorage(); err != nil {
		return err
	}
	if c.DICOM.IdleTimeout.Duration < 0 {
		return fmt.Errorf("dicom idle_timeout must not be negative (0: the default, 5m)")
	}
	if c.DICOM.ARTIMTimeout.Duration <= 0 {
		return fmt.Errorf("dicom artim_timeout must be positive")
	}
	if c.DICOM.MaxAssociations <= 0 {
		return fmt.Errorf("dicom max_associations must be positive")
	}
	if err := c.DICOM.validatePending(); err != nil {
		return err
	}
	if err := c.validateWeb(); err != nil {
		return err
	}
	if err := c.validateMetrics(); err != nil {
		return err
	}
	if err := c.Retention.validate(); err != nil {
		return err
	}
	if err := c.ValidateUsers(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range c.Peers {
		p := &c.Peers[i]
		if err := p.Validate(); err != nil {
			return err
		}
		if seen[p.AETitle] {
			return fmt.Errorf("peer %q is registered twice", p.AETitle)
		}
		if p.Deidentify != "" && c.Deidentify.SecretFile == "" {
			return fmt.Errorf("peer %s: deidentify needs [deidentify] secret_file (ward deid secret FILE makes one)", p.AETitle)
		}
		seen[p.AETitle] = true
	}
	for _, u := range c.Users {
		if u.Deidentify != "" && c.Deidentify.SecretFile == "" {
			return fmt.Errorf("user %s: deidentify needs [deidentify] secret_file (ward deid secret FILE makes one)", u.Name)
		}
	}
	return nil
}

// CheckLoopback accepts HOST:PORT only when HOST is a loopback address
// (127.0.0.0/8, ::1) or "localhost".
func CheckLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%q: %w (give an IP address)", host, ErrNotLoopback)
	}
	if !ip.IsLoopback() {
		return fmt.Errorf("%s: %w", host, ErrNotLoopback)
	}
	return nil
}

// IndexPath and BlobsPath are the embedded default locations.
func (c *Config) IndexPath() string { return filepath.Join(c.DataDir, "index.db") }
func (c *Config) BlobsPath() string { return c.DataDir }

// ValidNodeID reports whether id can name a node: 1 to 64 of A-Z a-z 0-9
// _ - (it names files and goes into blob keys).
func ValidNodeID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
