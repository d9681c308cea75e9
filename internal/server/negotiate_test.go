package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/admin"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/pdu"
)

var remote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}

func request(pcs ...pdu.PresentationContext) *pdu.AssociateRQ {
	return &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "MODALITY", ApplicationContext: pdu.ApplicationContextName, Contexts: pcs}
}

func negotiate(t *testing.T, c *config.Config, rq *pdu.AssociateRQ) map[byte]pdu.PresentationContext {
	t.Helper()
	s := &Server{Config: c}
	ac, rj := s.acceptor().Negotiate(rq, remote)
	if rj != nil {
		t.Fatalf("rejected: %v", rj)
	}
	out := map[byte]pdu.PresentationContext{}
	for _, pc := range ac.Contexts {
		out[pc.ID] = pc
	}
	return out
}

// Every Storage SOP Class of the generated PS3.4 Annex B table is accepted.
func TestEveryStorageSOPClassAccepted(t *testing.T) {
	classes := dicom.StorageSOPClasses()
	if len(classes) < 150 {
		t.Fatalf("only %d storage SOP classes in the table", len(classes))
	}
	for start := 0; start < len(classes); start += 128 {
		var pcs []pdu.PresentationContext
		for i, c := range classes[start:min(start+128, len(classes))] {
			pcs = append(pcs, pdu.PresentationContext{ID: byte(2*i + 1), AbstractSyntax: c.UID, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}})
		}
		got := negotiate(t, config.Default(), request(pcs...))
		for _, pc := range pcs {
			if got[pc.ID].Result != pdu.ResultAcceptance {
				t.Errorf("%s (%s) not accepted: %s", pc.AbstractSyntax, dicom.UIDName(pc.AbstractSyntax), pdu.ResultName(got[pc.ID].Result))
			}
		}
	}
}

func TestNegotiationPolicy(t *testing.T) {
	ct := "1.2.840.10008.5.1.4.1.1.2"
	private := "1.2.826.0.1.3680043.10.1432.99.1"
	jpegLossless := "1.2.840.10008.1.2.4.70"
	tests := []struct {
		name   string
		edit   func(*config.Config)
		pc     pdu.PresentationContext
		result byte
		ts     string
	}{
		{"peer order kept by default", nil, pdu.PresentationContext{AbstractSyntax: ct, TransferSyntaxes: []string{jpegLossless, dicom.ExplicitVRLittleEndian.UID}}, pdu.ResultAcceptance, jpegLossless},
		{"configured preference wins", func(c *config.Config) { c.DICOM.TransferSyntaxes = []string{dicom.ExplicitVRLittleEndian.UID} },
			pdu.PresentationContext{AbstractSyntax: ct, TransferSyntaxes: []string{jpegLossless, dicom.ExplicitVRLittleEndian.UID}}, pdu.ResultAcceptance, dicom.ExplicitVRLittleEndian.UID},
		{"compressed refused when disabled", func(c *config.Config) { f := false; c.DICOM.AcceptCompressed = &f },
			pdu.PresentationContext{AbstractSyntax: ct, TransferSyntaxes: []string{jpegLossless}}, pdu.ResultTransferSyntaxesNotSupported, ""},
		{"unknown abstract syntax", nil, pdu.PresentationContext{AbstractSyntax: private, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}, pdu.ResultAbstractSyntaxNotSupported, ""},
		{"private SOP class by configuration", func(c *config.Config) { c.DICOM.PrivateSOPClasses = []string{private} },
			pdu.PresentationContext{AbstractSyntax: private, TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}, pdu.ResultAcceptance, dicom.ImplicitVRLittleEndian.UID},
		{"verification", nil, pdu.PresentationContext{AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}}, pdu.ResultAcceptance, dicom.ImplicitVRLittleEndian.UID},
		{"invalid transfer syntax uid", nil, pdu.PresentationContext{AbstractSyntax: ct, TransferSyntaxes: []string{"not a uid"}}, pdu.ResultTransferSyntaxesNotSupported, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default()
			if tt.edit != nil {
				tt.edit(c)
			}
			tt.pc.ID = 1
			got := negotiate(t, c, request(tt.pc))[1]
			if got.Result != tt.result {
				t.Fatalf("result %s, want %s", pdu.ResultName(got.Result), pdu.ResultName(tt.result))
			}
			if tt.ts != "" && got.TransferSyntaxes[0] != tt.ts {
				t.Fatalf("transfer syntax %s, want %s", got.TransferSyntaxes[0], tt.ts)
			}
		})
	}
}

func TestCalledAETitleChecked(t *testing.T) {
	s := &Server{Config: config.Default()}
	rq := request(pdu.PresentationContext{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{dicom.ImplicitVRLittleEndian.UID}})
	rq.CalledAETitle = "ANY-SCP"
	_, rj := s.acceptor().Negotiate(rq, remote)
	if rj == nil || rj.Source != pdu.RejectSourceUser || rj.Reason != pdu.RejectCalledAENotRecognized || rj.Result != pdu.RejectPermanent {
		t.Fatalf("want rejection reason 7, got %+v", rj)
	}
}

func TestListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:11112", "[::]:11112", "192.0.2.1:104", "example.org:104", ":11112"} {
		c := config.Default()
		c.DICOM.Listen = addr
		c.Web.Listen = "127.0.0.1:0"
		c.DataDir = filepath.Join(t.TempDir(), "data")
		s := &Server{Config: c}
		if err := s.Open(t.Context()); err == nil {
			s.closeStores()
			t.Errorf("%s: started on a non-loopback address", addr)
		} else {
			t.Logf("%s: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.2:0"} {
		if err := config.CheckLoopback(addr); err != nil {
			t.Errorf("%s refused: %v", addr, err)
		}
	}
}

// A data directory whose path is too long for a Unix socket address serves,
// with its admin socket reached through /proc/self/fd on Linux (without one
// elsewhere); stopping removes the socket file.
func TestAdminSocketLongPath(t *testing.T) {
	c := config.Default()
	c.DataDir = filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	c.DICOM.Listen = "127.0.0.1:0"
	c.Web.Listen = "127.0.0.1:0"
	s := &Server{Config: c}
	if err := s.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(c.DataDir, admin.Socket)
	if runtime.GOOS == "linux" {
		if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin socket: %v, %v", fi, err)
		}
		addr, done, err := admin.SocketAddr(c.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("unix", addr)
		done()
		if err != nil {
			t.Fatalf("dialling the admin socket: %v", err)
		}
		conn.Close()
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("admin socket after stop: %v", err)
	}
}
