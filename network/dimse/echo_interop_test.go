package dimse_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/ward-pacs/ward/internal/testci"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

func verificationOnly(rq *pdu.AssociateRQ, remote net.Addr, abstract string) ([]string, func(string) bool, bool) {
	if abstract != dimse.VerificationSOPClass {
		return nil, nil, false
	}
	return []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}, nil, true
}

func startEchoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	neg := &assoc.Acceptor{AETitle: "WARD", TransferSyntaxes: verificationOnly}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				a, err := assoc.Serve(conn, assoc.Config{AETitle: "WARD"}, neg)
				if err != nil {
					return
				}
				d := &dimse.Dispatcher{}
				d.Serve(context.Background(), a)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestEchoWardClient(t *testing.T) {
	addr := startEchoServer(t)
	rq := &pdu.AssociateRQ{CalledAETitle: "WARD", CallingAETitle: "TEST", Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}}}}
	a, err := assoc.Dial(context.Background(), "tcp", addr, assoc.Config{AETitle: "TEST"}, rq)
	if err != nil {
		t.Fatal(err)
	}
	cl := dimse.NewClient(a)
	for i := 0; i < 3; i++ {
		if err := cl.Echo(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	// wrong called AE
	rq.CalledAETitle = "OTHER"
	_, err = assoc.Dial(context.Background(), "tcp", addr, assoc.Config{AETitle: "TEST"}, rq)
	if err == nil {
		t.Fatal("expected rejection")
	}
	t.Log(err)
}

func TestEchoDCMTK(t *testing.T) {
	testci.RequireTool(t, "echoscu")
	addr := startEchoServer(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("echoscu", "-v", "-aec", "WARD", "--repeat", "3", host, port)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
}
