package assoc

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/network/ul"
)

// These tests use the public API only. Each is named after the bug it
// caught.

// serveEstablished starts Serve on one end of a loopback pair and returns the
// peer's end with the association once the peer has been answered.
func serveEstablished(t *testing.T, cfg Config) (*Association, *peer) {
	t.Helper()
	ours, theirs := tcpPair(t)
	p := &peer{t: t, c: theirs}
	res := make(chan *Association, 1)
	go func() {
		a, err := Serve(ours, cfg, testAcceptor())
		if err != nil {
			t.Error(err)
		}
		res <- a
	}()
	p.send(testRQ().AppendTo(nil))
	p.expect(sent{typ: pdu.TypeAssociateAC})
	a := <-res
	if a == nil {
		t.FailNow()
	}
	return a, p
}

func requestEstablished(t *testing.T, cfg Config) (*Association, *peer) {
	t.Helper()
	ours, theirs := tcpPair(t)
	p := &peer{t: t, c: theirs}
	res := make(chan *Association, 1)
	go func() {
		a, err := Request(context.Background(), ours, cfg, testRQ())
		if err != nil {
			t.Error(err)
		}
		res <- a
	}()
	p.expect(sent{typ: pdu.TypeAssociateRQ})
	p.send(testAC().AppendTo(nil))
	a := <-res
	if a == nil {
		t.FailNow()
	}
	return a, p
}

// A release collision (PS3.8 9.2.2, Sta9-Sta12) used to end in an abort:
// the A-RELEASE indication of AR-8 went to Recv while the service user
// was blocked in Release, nobody answered it, and ARTIM aborted the
// association. Release must now succeed in both roles.
func TestRegressionReleaseCollision(t *testing.T) {
	cfg := Config{ARTIMTimeout: 2 * time.Second, IdleTimeout: -1}
	t.Run("requestor", func(t *testing.T) {
		a, p := requestEstablished(t, cfg)
		rel := async(a.Release)
		p.expect(sent{typ: pdu.TypeReleaseRQ})
		p.send(peerBytes[ul.Evt12]())          // crossing A-RELEASE-RQ
		p.expect(sent{typ: pdu.TypeReleaseRP}) // AR-9, Sta11
		p.send(peerBytes[ul.Evt13]())          // AR-3
		p.expectEOF()
		if err := waitErr(t, rel); err != nil {
			t.Fatalf("Release: %v", err)
		}
	})
	t.Run("acceptor", func(t *testing.T) {
		a, p := serveEstablished(t, cfg)
		rel := async(a.Release)
		p.expect(sent{typ: pdu.TypeReleaseRQ})
		p.send(peerBytes[ul.Evt12]()) // AR-8, Sta10
		p.send(peerBytes[ul.Evt13]()) // AR-10, Sta12, then AR-4
		p.expect(sent{typ: pdu.TypeReleaseRP})
		p.c.Close() // AR-5
		if err := waitErr(t, rel); err != nil {
			t.Fatalf("Release: %v", err)
		}
	})
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(wait):
		t.Fatal("still blocked")
		return nil
	}
}

// After an abort (AA-8) the owner waits in Sta13 for the peer to close.
// The reader used to stop as soon as done was closed (its post selected on
// done), so the close (Evt17, AR-5) was never seen and the connection was
// held until ARTIM expired. With a 1 minute ARTIM the close must now be
// seen at once.
func TestRegressionCloseSeenAfterAbort(t *testing.T) {
	for _, c := range []struct {
		name string
		send []byte
	}{
		{"unexpected A-ASSOCIATE-RQ", testRQ().AppendTo(nil)},
		{"unknown pdu type", []byte{0x08, 0, 0, 0, 0, 4, 0, 0, 0, 0}},
		{"pdv with even context id", []byte{0x04, 0, 0, 0, 0, 6, 0, 0, 0, 2, 2, 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, p := serveEstablished(t, Config{ARTIMTimeout: time.Minute, IdleTimeout: -1})
			p.send(c.send)
			p.expect(sent{pdu.TypeAbort, pdu.AbortSourceProvider})
			<-a.Done()
			// Half-close: Ward sees Evt17 in Sta13 (AR-5) and closes its
			// side, which the peer reads as EOF well before ARTIM.
			_ = p.c.CloseWrite()
			p.expectEOF()
		})
	}
}

// After an abort, with the owner still in Sta13, a primitive used to get
// either the abort (done closed) or "Evt9 not allowed in Sta13" (the owner
// took it), by chance. It must always get the end error.
func TestRegressionPrimitiveAfterAbort(t *testing.T) {
	a, p := serveEstablished(t, Config{ARTIMTimeout: time.Minute, IdleTimeout: -1})
	p.send([]byte{0x08, 0, 0, 0, 0, 4, 0, 0, 0, 0})
	p.expect(sent{pdu.TypeAbort, pdu.AbortSourceProvider})
	<-a.Done()
	for i := 0; i < 200; i++ {
		if err := a.Send(pdataBytes()); !errors.Is(err, ErrAborted) {
			t.Fatalf("Send after abort: %v", err)
		}
		if err := a.AcceptRelease(); !errors.Is(err, ErrAborted) {
			t.Fatalf("AcceptRelease after abort: %v", err)
		}
	}
}

// No goroutine outlives an association, whatever ends it.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := Config{ARTIMTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
	for i := 0; i < 5; i++ {
		// released by the peer
		a, p := serveEstablished(t, cfg)
		p.send(peerBytes[ul.Evt12]())
		if _, _, err := a.Recv(); !errors.Is(err, ErrReleased) {
			t.Fatal(err)
		}
		done := async(a.AcceptRelease)
		p.expect(sent{typ: pdu.TypeReleaseRP})
		p.c.Close()
		waitErr(t, done)
		// aborted by the peer
		a, p = serveEstablished(t, cfg)
		p.send(peerBytes[ul.Evt16]())
		<-a.Done()
		// idle: the peer says nothing (abort, then ARTIM closes)
		a, p = serveEstablished(t, cfg)
		p.expect(sent{pdu.TypeAbort, pdu.AbortSourceProvider})
		p.expectEOF()
		<-a.Done()
		// never sends the A-ASSOCIATE-RQ (ARTIM in Sta2)
		ours, theirs := tcpPair(t)
		if _, err := Serve(ours, cfg, testAcceptor()); !errors.Is(err, ErrTimeout) {
			t.Fatalf("Serve: %v", err)
		}
		theirs.Close()
		// rejected
		ours, theirs = tcpPair(t)
		pp := &peer{t: t, c: theirs}
		rq := testRQ()
		rq.CalledAETitle = "OTHER"
		pp.send(rq.AppendTo(nil))
		if _, err := Serve(ours, cfg, testAcceptor()); !errors.Is(err, ErrRejected) {
			t.Fatalf("Serve: %v", err)
		}
		pp.expect(sent{typ: pdu.TypeAssociateRJ})
		pp.expectEOF() // ARTIM in Sta13
		// requestor whose context is cancelled
		ours, theirs = tcpPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(20 * time.Millisecond); cancel() }()
		if _, err := Request(ctx, ours, cfg, testRQ()); !errors.Is(err, context.Canceled) {
			t.Fatalf("Request: %v", err)
		}
		theirs.Close()
	}
	checkGoroutines(t, before)
}

func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ net.Conn = (*fakeConn)(nil)

// Release used to return ErrClosed now and then for an orderly release:
// when the peer's A-RELEASE-RP followed at once, the owner answered the
// Evt11 primitive and then closed done, and primitive picked done over the
// answer at random.
func TestRegressionReleaseRacesDone(t *testing.T) {
	cfg := Config{ARTIMTimeout: 2 * time.Second, IdleTimeout: -1}
	for i := 0; i < 100; i++ {
		a, p := requestEstablished(t, cfg)
		rel := async(a.Release)
		p.expect(sent{typ: pdu.TypeReleaseRQ})
		p.send(peerBytes[ul.Evt13]())
		if err := waitErr(t, rel); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		p.c.Close()
	}
}

// TestRegressionSilentAcceptorTimesOut: a peer that accepts the TCP
// connection and never answers the A-ASSOCIATE-RQ makes Dial fail with
// ErrTimeout after ARTIM (found by ward scan, which saw a protocol error).
func TestRegressionSilentAcceptorTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // read everything, answer nothing
	}()
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "X", CallingAETitle: "Y", Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}}}}
	start := time.Now()
	_, err = Dial(context.Background(), "tcp", ln.Addr().String(), Config{AETitle: "Y", ARTIMTimeout: 300 * time.Millisecond}, rq)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Dial to a silent peer: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s", d)
	}
}
