package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// peerFlags are the addressing flags every SCU command shares.
type peerFlags struct {
	aec, aet *string
	timeout  *time.Duration
}

func addPeerFlags(fs interface {
	String(string, string, string) *string
	Duration(string, time.Duration, string) *time.Duration
}) peerFlags {
	return peerFlags{
		aec:     fs.String("aec", "ANY-SCP", "called AE title (the peer's)"),
		aet:     fs.String("aet", "WARDSCU", "calling AE title (ours)"),
		timeout: fs.Duration("timeout", 30*time.Second, "connection and association timeout"),
	}
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

func runEcho(e *env, args []string) error {
	fs := newFlagSet(e, "echo", "[--aec TITLE] [--aet TITLE] HOST:PORT")
	pf := addPeerFlags(fs)
	repeat := fs.Int("repeat", 1, "number of C-ECHO requests")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	ctx := context.Background()
	start := time.Now()
	a, err := assoc.Dial(ctx, "tcp", pos[0], pf.config(), pf.request([]pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}}}))
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
	fmt.Fprintf(e.stdout, "C-ECHO %s at %s: success (%d in %s; peer implementation %s %s)\n", *pf.aec, pos[0], *repeat, time.Since(start).Round(time.Microsecond), ac.UserInfo.ImplementationClassUID, ac.UserInfo.ImplementationVersionName)
	return nil
}
