package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/termsafe"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/tlsprofile"
)

// peerFlags are the addressing and transport flags every SCU command
// shares.
type peerFlags struct {
	aec, aet               *string
	timeout                *time.Duration
	tls                    *bool
	tlsCA, tlsCert, tlsKey *string
	user, jwt              *string
}

func addPeerFlags(fs *flag.FlagSet) peerFlags {
	return peerFlags{
		aec:     fs.String("aec", "ANY-SCP", "called AE title (the peer's)"),
		aet:     fs.String("aet", "WARDSCU", "calling AE title (ours)"),
		timeout: fs.Duration("timeout", 30*time.Second, "connection and association timeout"),
		tls:     fs.Bool("tls", false, "DICOM over TLS (PS3.15 B.12: TLS 1.2+, the peer's certificate verified for HOST)"),
		tlsCA:   fs.String("tls-ca", "", "CA certificates (PEM) that verify the peer's certificate (default: the system's roots)"),
		tlsCert: fs.String("tls-cert", "", "our client certificate (PEM), e.g. from ward pki issue"),
		tlsKey:  fs.String("tls-key", "", "its private key (PEM)"),
		user:    fs.String("user", "", "user identity (PS3.7 D.3.3.7): user name; the passcode is read from $WARD_PASSCODE"),
		jwt:     fs.String("jwt", "", "user identity: a file holding a JSON Web Token"),
	}
}

// identity is the user identity to send (nil: none), with a positive
// response requested.
func (p peerFlags) identity() (*pdu.UserIdentity, error) {
	switch {
	case *p.user != "" && *p.jwt != "":
		return nil, errors.New("give --user or --jwt, not both")
	case *p.user != "":
		pass, ok := os.LookupEnv("WARD_PASSCODE")
		if !ok {
			return nil, errors.New("--user: set the passcode in $WARD_PASSCODE (it is not taken on the command line, where other users could read it)")
		}
		return &pdu.UserIdentity{Type: 2, Primary: []byte(*p.user), Secondary: []byte(pass), PositiveResponse: true}, nil
	case *p.jwt != "":
		b, err := os.ReadFile(*p.jwt)
		if err != nil {
			return nil, err
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" || len(tok) > 0xFFFF {
			return nil, fmt.Errorf("--jwt %s: no token, or one too long for the identity item", *p.jwt)
		}
		return &pdu.UserIdentity{Type: 5, Primary: []byte(tok), PositiveResponse: true}, nil
	}
	return nil, nil
}

// dial connects to addr (over TLS with --tls) and requests an
// association.
func (p peerFlags) dial(ctx context.Context, addr string, rq *pdu.AssociateRQ) (*assoc.Association, error) {
	id, err := p.identity()
	if err != nil {
		return nil, err
	}
	rq.UserInfo.UserIdentity = id
	a, err := p.connect(ctx, addr, rq)
	if err != nil || id == nil {
		return a, err
	}
	if !a.Accept().UserInfo.HasIdentityResponse {
		a.Abort()
		return nil, errors.New("the peer accepted the association without confirming the user identity (no positive response): it did not check it")
	}
	return a, nil
}

func (p peerFlags) connect(ctx context.Context, addr string, rq *pdu.AssociateRQ) (*assoc.Association, error) {
	if !*p.tls {
		if *p.tlsCA != "" || *p.tlsCert != "" {
			return nil, errors.New("--tls-ca and --tls-cert need --tls")
		}
		return assoc.Dial(ctx, "tcp", addr, p.config(), rq)
	}
	tc, err := p.tlsClient(addr)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, *p.timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: tc}
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s over TLS: %w", addr, err)
	}
	return assoc.Request(ctx, conn, p.config(), rq)
}

// tlsClient is the TLS profile's client for the peer at addr, verified
// for its host, with --tls-ca and --tls-cert/--tls-key.
func (p peerFlags) tlsClient(addr string) (*tls.Config, error) {
	host, err := tlsprofile.ServerName(addr)
	if err != nil {
		return nil, err
	}
	o := tlsprofile.ClientOptions{ServerName: host}
	if *p.tlsCA != "" {
		if o.RootCAs, err = tlsprofile.LoadCAs(*p.tlsCA); err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
	}
	if (*p.tlsCert == "") != (*p.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if *p.tlsCert != "" {
		cert, err := tlsprofile.LoadKeyPair(*p.tlsCert, *p.tlsKey)
		if err != nil {
			return nil, err
		}
		o.Certificate = &cert
	}
	return tlsprofile.Client(o), nil
}

func (p peerFlags) config() assoc.Config {
	return assoc.Config{
		AETitle:                   *p.aet,
		ARTIMTimeout:              *p.timeout,
		ImplementationClassUID:    dicom.ImplementationClassUID,
		ImplementationVersionName: dicom.ImplementationVersionName,
	}
}

func (p peerFlags) request(contexts []pdu.PresentationContext) *pdu.AssociateRQ {
	return &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: *p.aec, CallingAETitle: *p.aet, ApplicationContext: pdu.ApplicationContextName, Contexts: contexts}
}

var echoCmd = &command{
	name: "echo", summary: "send C-ECHO to a DICOM peer", args: "[--aec TITLE] [--aet TITLE] HOST:PORT", minArgs: 1, maxArgs: 1,
	help: `Sends C-ECHO (the Verification service) to the DICOM peer at HOST:PORT,
--repeat times on one association, and prints how long it took and the
peer's implementation class UID and version name.`,
	flags: echoFlags,
}

func echoFlags(fs *flag.FlagSet) runFunc {
	pf := addPeerFlags(fs)
	repeat := fs.Int("repeat", 1, "number of C-ECHO requests")
	return func(e *env, pos []string) error {
		ctx := context.Background()
		start := time.Now()
		a, err := pf.dial(ctx, pos[0], pf.request([]pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}}}))
		if err != nil {
			return err
		}
		cl := dimse.NewClient(a)
		for i := 0; i < *repeat; i++ {
			if err := cl.Echo(ctx); err != nil {
				a.Abort()
				return err
			}
		}
		if err := a.Release(); err != nil {
			return err
		}
		ac := a.Accept()
		fmt.Fprintf(e.stdout, "C-ECHO %s at %s: success (%d in %s; peer implementation %s %s)\n", *pf.aec, pos[0], *repeat, time.Since(start).Round(time.Microsecond), termsafe.Quote(ac.UserInfo.ImplementationClassUID), termsafe.Quote(ac.UserInfo.ImplementationVersionName))
		return nil
	}
}
