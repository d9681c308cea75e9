package dimse_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

// startServer serves associations like ward serve does, with short timers.
// stop closes the listener and waits for every association to end.
func startServer(t *testing.T, cfg assoc.Config) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	neg := &assoc.Acceptor{AETitle: "WARD", TransferSyntaxes: verificationOnly}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := assoc.Serve(conn, cfg, neg)
				if err != nil {
					return
				}
				d := &dimse.Dispatcher{}
				_ = d.Serve(context.Background(), a)
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }
}

func echoRQ() *pdu.AssociateRQ {
	return &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "RAW",
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{"1.2.840.10008.1.2"}}},
		UserInfo: pdu.UserInfo{MaxLength: 16384, ImplementationClassUID: "1.2.3.4"}}
}

func pdata(pdvs ...[]byte) []byte {
	n := 0
	for _, v := range pdvs {
		n += len(v)
	}
	b := []byte{0x04, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], uint32(n))
	for _, v := range pdvs {
		b = append(b, v...)
	}
	return b
}

// pdv encodes a PDV item with its length field set to length (usually
// len(data)+2).
func pdv(length uint32, ctx, mch byte, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, length)
	return append(append(b, ctx, mch), data...)
}

func echoCommand() []byte {
	return (&dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 1, AffectedSOPClassUID: dimse.VerificationSOPClass}).Encode()
}

// rqWithItem is an A-ASSOCIATE-RQ with one more top-level item appended.
func rqWithItem(typ byte, body []byte) []byte {
	b := echoRQ().AppendTo(nil)
	b = append(b, typ, 0, byte(len(body)>>8), byte(len(body)))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[2:], uint32(len(b)-6))
	return b
}

// rqEvenContext is an A-ASSOCIATE-RQ whose presentation context ID is 2.
func rqEvenContext() []byte {
	rq := echoRQ()
	rq.Contexts[0].ID = 2
	return rq.AppendTo(nil)
}

type want int

const (
	wantAbort  want = iota // A-ABORT, then the connection is closed
	wantReject             // A-ASSOCIATE-RJ, then closed
	wantClose              // closed without a PDU (ARTIM in Sta2)
)

// TestMalformedPeers sends each malformed input on a raw connection to a
// running server and checks that it answers with A-ABORT (or closes, when
// the standard says nothing is sent), closes within bounded time, allocates
// nothing near a declared 4 GB, and keeps serving C-ECHO to others
// meanwhile; no goroutine is left behind.
func TestMalformedPeers(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := assoc.Config{AETitle: "WARD", ARTIMTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	addr, stop := startServer(t, cfg)

	// A well-behaved peer echoes in a loop throughout.
	var echoes atomic.Int64
	echoErr := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var echoWG sync.WaitGroup
	echoWG.Add(1)
	go func() {
		defer echoWG.Done()
		for ctx.Err() == nil {
			a, err := assoc.Dial(ctx, "tcp", addr, assoc.Config{AETitle: "GOOD"}, echoRQ())
			if err != nil {
				err = fmt.Errorf("dial: %w", err)
			} else {
				cl := dimse.NewClient(a)
				err = cl.Echo(ctx)
				if err == nil {
					if err = a.Release(); err != nil {
						err = fmt.Errorf("release: %w", err)
					}
				} else {
					err = fmt.Errorf("echo: %w", err)
					a.Abort()
				}
			}
			if err != nil && ctx.Err() == nil {
				echoErr <- err
				return
			}
			echoes.Add(1)
		}
	}()

	establish := echoRQ().AppendTo(nil)
	cases := []struct {
		name      string
		associate bool // establish first (Sta6)
		send      []byte
		want      want
		huge      bool // declares 4 GB: check the allocations
	}{
		// Before the association (Sta2).
		{name: "garbage", send: []byte("GET / HTTP/1.1\r\nHost: ward\r\n\r\n"), want: wantAbort},
		{name: "unknown pdu type 0x08", send: []byte{0x08, 0, 0, 0, 0, 4, 0, 0, 0, 0}, want: wantAbort},
		{name: "unknown pdu type 0xFF", send: []byte{0xFF, 0, 0, 0, 0, 4, 0, 0, 0, 0}, want: wantAbort},
		{name: "associate-rq of 4 GB", send: []byte{0x01, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1}, want: wantAbort, huge: true},
		{name: "p-data of 4 GB before association", send: []byte{0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF}, want: wantAbort, huge: true},
		{name: "associate-rq shorter than its fixed fields", send: append([]byte{0x01, 0, 0, 0, 0, 10}, make([]byte, 10)...), want: wantAbort},
		{name: "associate-rq item beyond pdu end", send: func() []byte {
			b := append([]byte(nil), establish...)
			binary.BigEndian.PutUint32(b[2:], uint32(len(b)-6-10)) // cuts the last item short
			return b[:len(b)-10]
		}(), want: wantAbort},
		{name: "associate-rq unknown item type", send: rqWithItem(0x99, []byte("x")), want: wantAbort},
		{name: "associate-rq even presentation context id", send: rqEvenContext(), want: wantAbort},
		{name: "associate-rq two application context items", send: rqWithItem(0x10, []byte("1.2.840.10008.3.1.1.1")), want: wantAbort},
		{name: "associate-rq two user information items", send: rqWithItem(0x50, []byte{0x51, 0, 0, 4, 0, 0, 0x10, 0}), want: wantAbort},
		{name: "associate-rq two presentation contexts with one id", send: func() []byte {
			rq := echoRQ()
			rq.Contexts = append(rq.Contexts, rq.Contexts[0])
			return rq.AppendTo(nil)
		}(), want: wantReject},
		{name: "associate-rj zero-length", send: []byte{0x03, 0, 0, 0, 0, 0}, want: wantAbort},
		{name: "p-data before association", send: pdata(pdv(6, 1, 3, echoCommand()[:4])), want: wantAbort},
		{name: "release-rq before association", send: []byte{0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0}, want: wantAbort},
		{name: "half a pdu then silence", send: establish[:40], want: wantClose},
		{name: "nothing at all", send: nil, want: wantClose},
		{name: "wrong called AE", send: func() []byte { rq := echoRQ(); rq.CalledAETitle = "NOTWARD"; return rq.AppendTo(nil) }(), want: wantReject},
		{name: "protocol version 2", send: func() []byte { b := echoRQ().AppendTo(nil); b[7] = 2; return b }(), want: wantReject},

		// Once associated (Sta6).
		{name: "associate-rq twice", associate: true, send: establish, want: wantAbort},
		{name: "p-data of 4 GB", associate: true, send: []byte{0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0}, want: wantAbort, huge: true},
		{name: "p-data of 0 bytes", associate: true, send: []byte{0x04, 0, 0, 0, 0, 0}, want: wantAbort},
		{name: "pdv length 0", associate: true, send: pdata(pdv(0, 1, 3, nil)), want: wantAbort},
		{name: "pdv length 1", associate: true, send: pdata(pdv(1, 1, 3, []byte{0})), want: wantAbort},
		{name: "pdv beyond pdu end", associate: true, send: pdata(pdv(100, 1, 3, []byte{0, 0})), want: wantAbort},
		{name: "pdv even context id", associate: true, send: pdata(pdv(4, 2, 3, []byte{0, 0})), want: wantAbort},
		{name: "pdv bad control header", associate: true, send: pdata(pdv(4, 1, 0x80, []byte{0, 0})), want: wantAbort},
		{name: "command on unaccepted context", associate: true, send: pdata(pdv(uint32(len(echoCommand())+2), 3, 3, echoCommand())), want: wantAbort},
		{name: "data where a command was expected", associate: true, send: pdata(pdv(6, 1, 2, []byte{8, 0, 0x10, 0})), want: wantAbort},
		{name: "command with bad element length", associate: true, send: pdata(pdv(10, 1, 3, []byte{0, 0, 0, 1, 0xFF, 0xFF, 0, 0})), want: wantAbort},
		{name: "command without command field", associate: true, send: pdata(pdv(14, 1, 3, []byte{0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0})), want: wantAbort},
		{name: "unknown pdu type when associated", associate: true, send: []byte{0xFF, 0, 0, 0, 0, 0}, want: wantAbort},
		{name: "garbage when associated", associate: true, send: []byte("\x00\x00garbage garbage garbage"), want: wantAbort},
		{name: "half a pdu then silence when associated", associate: true, send: pdata(pdv(100, 1, 3, make([]byte, 98)))[:50], want: wantAbort},
		{name: "silence when associated", associate: true, send: nil, want: wantAbort},
	}
	t.Run("cases", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if c.associate {
					conn.Write(establish)
					_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
					if p, _, err := pdu.Read(conn, 1<<20, nil); err != nil || p.Type() != pdu.TypeAssociateAC {
						t.Fatalf("establishing: %v %v", p, err)
					}
				}
				var ms0 runtime.MemStats
				if c.huge {
					runtime.ReadMemStats(&ms0)
				}
				start := time.Now()
				if len(c.send) > 0 {
					if _, err := conn.Write(c.send); err != nil {
						t.Fatal(err)
					}
				}
				_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				p, _, err := pdu.Read(conn, 1<<20, nil)
				switch c.want {
				case wantAbort:
					if err != nil || p.Type() != pdu.TypeAbort {
						t.Fatalf("got %v %v, want A-ABORT", p, err)
					}
					t.Logf("A-ABORT %v", p)
				case wantReject:
					if err != nil || p.Type() != pdu.TypeAssociateRJ {
						t.Fatalf("got %v %v, want A-ASSOCIATE-RJ", p, err)
					}
					t.Logf("A-ASSOCIATE-RJ %v", p)
				case wantClose:
					if err == nil {
						t.Fatalf("got %v, want a close", p)
					}
				}
				// Then the server closes (the peer never does here: ARTIM).
				if c.want != wantClose {
					rest, err := io.ReadAll(conn)
					if err != nil {
						t.Fatalf("waiting for the close: %v", err)
					}
					if len(rest) > 0 {
						t.Fatalf("% x after the answer", rest)
					}
				} else if !errors.Is(err, io.EOF) {
					t.Fatalf("want EOF, got %v", err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("closed after %s", d)
				}
				if c.huge {
					var ms1 runtime.MemStats
					runtime.ReadMemStats(&ms1)
					// Other associations run meanwhile and allocate a few MB;
					// a body buffer for the declared length would be 4 GB.
					if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<30 {
						t.Errorf("%d bytes allocated for a PDU declaring 4 GB", d)
					}
				}
			})
		}
	})
	cancel()
	echoWG.Wait()
	select {
	case err := <-echoErr:
		t.Fatalf("C-ECHO failed while malformed peers were served: %v", err)
	default:
	}
	if echoes.Load() == 0 {
		t.Fatal("no C-ECHO succeeded")
	}
	t.Logf("%d C-ECHO associations meanwhile", echoes.Load())
	stop()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
