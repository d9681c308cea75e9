package cli

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/pki"
)

// `ward pki`: the commands of the CA library in package pki.

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runPKI(e *env, args []string) error {
	usage := func() error {
		fmt.Fprintln(e.stderr, `Usage:
  ward pki init [--name NAME]... [--config FILE | --data DIR]
  ward pki issue PEER [--config FILE | --data DIR]
  ward pki revoke PEER [--config FILE | --data DIR]

For a site without a PKI. 'init' writes under DATA/pki a CA (ECDSA P-256,
10 years) and a server certificate for the names (DNS names or IP
addresses; default localhost and 127.0.0.1; 2 years), and prints the
configuration lines that enable DIMSE over TLS. It never overwrites a CA.
'issue' writes a client certificate for PEER signed by that CA to
DATA/pki/peers/PEER.crt and .key and prints its SHA-256 fingerprint.
'revoke' adds PEER's certificate to the CA's revocation list,
DATA/pki/crl.pem, which Ward reads when [dicom] tls_crl names it (again
within seconds of each change), and moves the certificate and key aside,
so that 'issue' can make PEER a new one.
Private keys are written with mode 0600.`)
		return errUsage
	}
	if len(args) < 1 {
		return usage()
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet(e, "pki "+sub, "[flags]")
	configPath := fs.String("config", "", "configuration file (TOML; default: DATA/ward.toml when present)")
	dataDir := fs.String("data", "", "data directory (default "+config.DefaultDataDir+")")
	var names stringList
	if sub == "init" {
		fs.Var(&names, "name", "DNS name or IP address of the server certificate (repeatable; default localhost and 127.0.0.1)")
	}
	switch sub {
	case "init", "issue", "revoke":
	case "-h", "--help", "help":
		usage()
		return flag.ErrHelp
	default:
		return usage()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	c, err := loadConfig(*configPath, *dataDir)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(filepath.Join(c.DataDir, "pki"))
	if err != nil {
		return err
	}
	if sub == "init" {
		if len(pos) != 0 {
			return usage()
		}
		if len(names) == 0 {
			names = stringList{"localhost", "127.0.0.1"}
		}
		return pkiInit(e, dir, names)
	}
	if len(pos) != 1 {
		return usage()
	}
	if sub == "revoke" {
		return pkiRevoke(e, dir, pos[0])
	}
	return pkiIssue(e, dir, pos[0])
}

func pkiInit(e *env, dir string, names []string) error {
	f, err := pki.Init(dir, names)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `CA certificate:      %s
CA private key:      %s (0600; keep it offline if you can)
server certificate:  %s (for %s)
server private key:  %s (0600)
revocation list:     %s (empty; ward pki revoke PEER adds to it)

To enable DIMSE over TLS, add to Ward's configuration:

[dicom]
tls_listen    = "127.0.0.1:2762"
tls_cert      = %q
tls_key       = %q
tls_client_ca = %q
tls_crl       = %q

or run: ward serve --dicom-tls-listen 127.0.0.1:2762 --tls-cert %s --tls-key %s --tls-client-ca %s --tls-crl %s
Peers need %s to verify Ward; issue their client certificates with 'ward pki issue PEER'
and withdraw one with 'ward pki revoke PEER'.
`, f.CACert, f.CAKey, f.ServerCert, strings.Join(names, ", "), f.ServerKey, f.CRL,
		f.ServerCert, f.ServerKey, f.CACert, f.CRL, f.ServerCert, f.ServerKey, f.CACert, f.CRL, f.CACert)
	return nil
}

// openCA checks PEER's name, then opens the CA of dir.
func openCA(dir, peer string) (*pki.CA, error) {
	if err := pki.CheckPeerName(peer); err != nil {
		return nil, err
	}
	return pki.Open(dir)
}

func pkiIssue(e *env, dir, peer string) error {
	ca, err := openCA(dir, peer)
	if err != nil {
		return err
	}
	is, err := ca.Issue(peer)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `client certificate:  %s (CN=%s, signed by %s)
private key:         %s (0600)
SHA-256 fingerprint: %s

Register the peer with its certificate pinned, e.g.:
  ward peer add %s --cert-fingerprint %s --allow echo,store
`, is.Cert, peer, filepath.Join(dir, pki.CACertFile), is.Key, is.Fingerprint, peer, is.Fingerprint)
	return nil
}

func pkiRevoke(e *env, dir, peer string) error {
	ca, err := openCA(dir, peer)
	if err != nil {
		return err
	}
	r, err := ca.Revoke(peer)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, `revoked:         %s (CN=%s, serial %s)
revocation list: %s (%d certificates)
moved aside:     %s%s, with its key

Ward refuses the certificate once its configuration names the list:

[dicom]
tls_crl = %q

(or ward serve --tls-crl %s). A running Ward reads a changed list within
seconds. Issue %s a new certificate with 'ward pki issue %s' and pin it
again if the peer was pinned (ward peer add %s --cert-fingerprint ...).
`, r.CertFile, r.Cert.Subject.CommonName, r.Cert.SerialNumber.Text(16), r.CRL, r.Listed,
		r.CertFile, r.Suffix, r.CRL, r.CRL, peer, peer, peer)
	return nil
}
