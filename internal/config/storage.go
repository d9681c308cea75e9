package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Backends named by URL. [storage] index and blobs take either a backend
// name (with its DSN in index_dsn, blobs_dsn) or a URL, whose scheme names
// the backend and which is, whole, its DSN:
//
//	index = "postgres://ward@db1.example.org/ward?sslmode=verify-full"
//	blobs = "s3://ward-archive/objects?endpoint=https://s3.example.org&region=eu-1"
//
// Passwords and keys never go in a URL (the file is read by every
// operator and copied into backups): PostgreSQL's password comes from
// PGPASSWORD or the password file (PGPASSFILE, ~/.pgpass), S3's keys from
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the shared credentials file.

// Backend names for the URL schemes.
const (
	IndexPostgres = "postgres"
	BlobsS3       = "s3"
)

// indexSchemes and blobsSchemes map URL schemes to backend names.
var (
	indexSchemes = map[string]string{"postgres": IndexPostgres, "postgresql": IndexPostgres}
	blobsSchemes = map[string]string{"s3": BlobsS3}
)

// ErrSecretInURL: a password or key written in a storage URL or DSN.
var ErrSecretInURL = errors.New("a password or key in the configuration is refused")

// Backend is a backend as configured: its name and DSN ("" for both: the
// embedded default).
type Backend struct{ Name, DSN string }

// IndexBackend is the index backend [storage] names: index as a URL, or
// index with index_dsn.
func (s *Storage) IndexBackend() (Backend, error) {
	return resolveBackend("index", s.Index, s.IndexDSN, indexSchemes, "postgres://USER@HOST/DATABASE")
}

// BlobsBackend is the blobs backend [storage] names: blobs as a URL, or
// blobs with blobs_dsn.
func (s *Storage) BlobsBackend() (Backend, error) {
	return resolveBackend("blobs", s.Blobs, s.BlobsDSN, blobsSchemes, "s3://BUCKET/PREFIX?endpoint=…&region=…")
}

func resolveBackend(key, value, dsn string, schemes map[string]string, example string) (Backend, error) {
	if !strings.Contains(value, "://") {
		if value == "" && dsn != "" {
			return Backend{}, fmt.Errorf("storage %s_dsn is set without %s: name the backend (or give %s as a URL, e.g. %s)", key, key, key, example)
		}
		b := Backend{Name: value, DSN: dsn}
		if err := checkSecrets(key, b); err != nil {
			return Backend{}, err
		}
		return b, nil
	}
	if dsn != "" {
		return Backend{}, fmt.Errorf("storage %s is a URL and %s_dsn is set too: the URL is the whole DSN, remove %s_dsn", key, key, key)
	}
	u, err := url.Parse(value)
	if err != nil {
		// url.Parse quotes the whole value in its error: keep any
		// password out of messages and logs.
		return Backend{}, fmt.Errorf("storage %s: not a valid URL (e.g. %s)", key, example)
	}
	scheme := strings.ToLower(u.Scheme)
	name, ok := schemes[scheme]
	if !ok {
		known := make([]string, 0, len(schemes))
		for s := range schemes {
			known = append(known, s+"://")
		}
		return Backend{}, fmt.Errorf("storage %s: unknown scheme %q: Ward has %s backends for %s (e.g. %s)", key, u.Scheme, key, strings.Join(sortedStrings(known), ", "), example)
	}
	b := Backend{Name: name, DSN: value}
	if err := checkSecrets(key, b); err != nil {
		return Backend{}, err
	}
	if name == BlobsS3 && u.Host == "" {
		return Backend{}, fmt.Errorf("storage %s: %s names no bucket (e.g. %s)", key, redact(u), example)
	}
	return b, nil
}

// checkSecrets refuses a DSN of the PostgreSQL or S3 backends that holds
// a password or key: in the URL's user part, or as a parameter.
func checkSecrets(key string, b Backend) error {
	if b.Name != IndexPostgres && b.Name != BlobsS3 {
		return nil
	}
	where := fmt.Sprintf("storage %s", key)
	fix := "give the password in PGPASSWORD or the password file (PGPASSFILE, ~/.pgpass) instead"
	if b.Name == BlobsS3 {
		fix = "give the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the shared credentials file instead"
	}
	if strings.Contains(b.DSN, "://") {
		u, err := url.Parse(b.DSN)
		if err != nil {
			return fmt.Errorf("%s: not a valid URL", where)
		}
		if u.User != nil {
			if _, has := u.User.Password(); has || b.Name == BlobsS3 {
				return fmt.Errorf("%s: %w: the URL carries credentials (%s); %s", where, ErrSecretInURL, redact(u), fix)
			}
		}
		for k := range u.Query() {
			if secretParam(k) {
				return fmt.Errorf("%s: %w: the URL has a %s parameter; %s", where, ErrSecretInURL, k, fix)
			}
		}
		return nil
	}
	// A libpq key=value DSN.
	for _, f := range strings.Fields(b.DSN) {
		k, _, _ := strings.Cut(f, "=")
		if secretParam(strings.TrimSpace(k)) {
			return fmt.Errorf("%s_dsn: %w: the DSN has a %s setting; %s", where, ErrSecretInURL, k, fix)
		}
	}
	return nil
}

// secretParam reports whether a URL or DSN parameter carries a secret.
func secretParam(k string) bool {
	switch strings.ToLower(k) {
	case "password", "pass", "passwd", "secret", "secret_key", "secretkey", "secret_access_key",
		"access_key", "accesskey", "access_key_id", "session_token", "token",
		"aws_secret_access_key", "aws_access_key_id", "aws_session_token", "x-amz-credential", "x-amz-signature", "x-amz-security-token":
		return true
	}
	return false
}

// redact is u without its password, for messages.
func redact(u *url.URL) string { return u.Redacted() }

func sortedStrings(s []string) []string { slices.Sort(s); return s }

// Cluster reports whether the configuration names a shared PostgreSQL
// index: the index several nodes use together, where the registered
// peers, the users and the API tokens live too (not in this file and the
// data directory).
func (c *Config) Cluster() bool {
	b, err := c.Storage.IndexBackend()
	return err == nil && b.Name == IndexPostgres
}

// ErrClusterLocal: [[peers]] or [[users]] in the file of a node of a
// cluster.
var ErrClusterLocal = errors.New("in cluster mode the registered peers and the users live in the shared index, not in ward.toml")

// validateStorage checks the storage backends and, in cluster mode, that
// no peers or users are configured in the file.
func (c *Config) validateStorage() error {
	if _, err := c.Storage.IndexBackend(); err != nil {
		return err
	}
	if _, err := c.Storage.BlobsBackend(); err != nil {
		return err
	}
	if !c.Cluster() {
		return nil
	}
	if len(c.Peers) > 0 || len(c.Users) > 0 {
		return fmt.Errorf("%w: this file has %d [[peers]] and %d [[users]] tables; move them with 'ward peer import' (which copies this file's peers and users into the shared index), then remove them from the file", ErrClusterLocal, len(c.Peers), len(c.Users))
	}
	return nil
}

// checkStorage adds the findings of [storage]'s backends to Check.
func (c *Config) checkStorage(add func(Severity, bool, string, string, string)) {
	ib, ierr := c.Storage.IndexBackend()
	bb, berr := c.Storage.BlobsBackend()
	for _, err := range []error{ierr, berr} {
		if err != nil {
			add(Critical, true, "[storage]", err.Error(), "name a backend Ward has, by URL without a password or key")
		}
	}
	if ierr == nil && ib.Name == IndexPostgres {
		add(Info, false, "[storage] index", "cluster mode: the registered peers, the users, the API tokens and the browser sessions live in the shared PostgreSQL index, for every node, and the nodes count lockouts together; each node keeps its own audit trail", "manage peers, users and tokens with ward peer, ward user and ward token on any node (they write the shared index)")
		if len(c.Peers) > 0 || len(c.Users) > 0 {
			add(High, true, "[[peers]] / [[users]]", "in cluster mode peers and users live in the shared index; the file's tables would be silently ignored by other nodes", "copy them with 'ward peer import', then remove them from the file")
		}
		if u, err := url.Parse(ib.DSN); err == nil && !localHost(u.Hostname()) {
			switch mode := u.Query().Get("sslmode"); mode {
			case "verify-full":
			case "verify-ca":
				add(Low, false, "[storage] index sslmode = verify-ca", "the PostgreSQL server's certificate is checked against the CA but not for its host name", "use sslmode=verify-full")
			default:
				if mode == "" {
					mode = "prefer (the default)"
				}
				add(Medium, false, "[storage] index sslmode = "+mode, "the connection to PostgreSQL on "+u.Hostname()+" is not verified (or not encrypted): the index's patient data and the passwords cross the network in a form others can read or intercept", "use sslmode=verify-full with sslrootcert, or a unix socket")
			}
		}
	}
	if berr == nil && bb.Name == BlobsS3 {
		if u, err := url.Parse(bb.DSN); err == nil {
			if ep, err := url.Parse(u.Query().Get("endpoint")); err == nil && ep.Scheme == "http" && !localHost(ep.Hostname()) {
				add(Medium, false, "[storage] blobs endpoint = "+ep.Redacted(), "the objects travel to S3 in clear text", "use an https:// endpoint")
			}
		}
	}
}

// localHost reports whether host (of a URL) is this machine: empty (a
// unix socket or the default), a socket path, localhost or a loopback
// address.
func localHost(host string) bool {
	if host == "" || host == "localhost" || strings.HasPrefix(host, "/") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
