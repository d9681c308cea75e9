package cli

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ward-pacs/ward/pki"
)

// `ward pki`: the commands of the CA library in package pki.

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

var pkiCmd = &command{
	name: "pki", summary: "make a CA, a server certificate and client certificates for DICOM TLS",
	help: `For a site without a PKI. 'init' writes under DATA/pki a CA (ECDSA P-256,
10 years) and a server certificate for the names (DNS names or IP
addresses; default localhost and 127.0.0.1; 2 years), and prints the
configuration lines that enable DIMSE over TLS. It never overwrites a CA.
'issue' writes a client certificate for PEER signed by that CA to
DATA/pki/peers/PEER.crt and .key and prints its SHA-256 fingerprint.
'revoke' adds PEER's certificate to the CA's revocation list,
DATA/pki/crl.pem, which Ward reads when [dicom] tls_crl names it (again
within seconds of each change), and moves the certificate and key aside,
so that 'issue' can make PEER a new one.
Keys, certificates and the list are written with mode 0600.`,
	subs: []*command{
		{
			name: "init", summary: "make the CA and the server certificate",
			args: "[--name NAME]... [--config FILE | --data DIR]",
			help: `Writes under DATA/pki a CA and a server certificate for the names, and
prints the configuration lines that enable DIMSE over TLS. It never
overwrites a CA.`,
			flags: pkiInitFlags,
		},
		{
			name: "issue", summary: "make a client certificate for a peer",
			args: "PEER [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help: `Writes a client certificate for PEER signed by the CA to
DATA/pki/peers/PEER.crt and .key, and prints its SHA-256 fingerprint.`,
			flags: pkiPeerFlags(pkiIssue),
		},
		{
			name: "revoke", summary: "revoke a peer's client certificate",
			args: "PEER [--config FILE | --data DIR]", minArgs: 1, maxArgs: 1,
			help: `Adds PEER's certificate to the CA's revocation list, DATA/pki/crl.pem,
and moves the certificate and key aside.`,
			flags: pkiPeerFlags(pkiRevoke),
		},
	},
}

// pkiDirOf is DATA/pki, absolute, of the configuration the flags name.
func pkiDirOf(df dataFlags) (string, error) {
	c, err := df.load()
	if err != nil {
		return "", err
	}
	return filepath.Abs(filepath.Join(c.DataDir, "pki"))
}

func pkiInitFlags(fs *flag.FlagSet) runFunc {
	df := addDataFlags(fs)
	var names stringList
	fs.Var(&names, "name", "DNS name or IP address of the server certificate (repeatable; default localhost and 127.0.0.1)")
	return func(e *env, _ []string) error {
		dir, err := pkiDirOf(df)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			names = stringList{"localhost", "127.0.0.1"}
		}
		return pkiInit(e, dir, names)
	}
}

// pkiPeerFlags is ward pki issue or revoke (op) PEER.
func pkiPeerFlags(op func(e *env, dir, peer string) error) func(*flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		df := addDataFlags(fs)
		return func(e *env, pos []string) error {
			dir, err := pkiDirOf(df)
			if err != nil {
				return err
			}
			return op(e, dir, pos[0])
		}
	}
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
