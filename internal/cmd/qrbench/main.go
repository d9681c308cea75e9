// Command qrbench measures C-FIND latency of any DICOM peer precisely: one
// association, then N timed C-ECHO and N timed C-FIND exchanges on it, so
// that no process start-up or association set-up hides the server's own
// time. The same client measures every peer, side by side:
//
//	go run ./internal/cmd/qrbench -aec WARD -n 200 127.0.0.1:11112 \
//	    QueryRetrieveLevel=STUDY PatientID=X StudyInstanceUID
//
// Keys are Keyword=Value (a matching key) or Keyword (a return key). It
// prints the median and the 90th percentile of each, and the match count.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
)

func main() {
	aec := flag.String("aec", "ANY-SCP", "called AE title")
	aet := flag.String("aet", "BENCHSCU", "calling AE title")
	n := flag.Int("n", 100, "timed exchanges of each kind")
	patientRoot := flag.Bool("P", false, "patient root (default study root)")
	flag.Parse()
	if flag.NArg() < 2 {
		flag.Usage()
		os.Exit(2)
	}
	model := dimse.StudyRootFind
	if *patientRoot {
		model = dimse.PatientRootFind
	}
	ids := &dicom.DataSet{}
	for _, k := range flag.Args()[1:] {
		kw, val, _ := strings.Cut(k, "=")
		tag, ok := dicom.TagByKeyword(kw)
		if !ok {
			fmt.Fprintf(os.Stderr, "qrbench: unknown keyword %q\n", kw)
			os.Exit(2)
		}
		if val == "" && ids.Get(tag) != nil {
			continue // a return key never overrides a matching key
		}
		ids.Set(tag, val)
	}
	ts := []string{dicom.ExplicitVRLittleEndian.UID, dicom.ImplicitVRLittleEndian.UID}
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: *aec, CallingAETitle: *aet, ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: ts}, {ID: 3, AbstractSyntax: model, TransferSyntaxes: ts}}}
	ctx := context.Background()
	a, err := assoc.Dial(ctx, "tcp", flag.Arg(0), assoc.Config{AETitle: *aet, ImplementationClassUID: dicom.ImplementationClassUID, ImplementationVersionName: dicom.ImplementationVersionName}, rq)
	if err != nil {
		fmt.Fprintln(os.Stderr, "qrbench:", err)
		os.Exit(1)
	}
	defer a.Release()
	cl := dimse.NewClient(a)
	pc, ok := cl.FindContext(model, "")
	if !ok {
		fmt.Fprintln(os.Stderr, "qrbench: the peer refused the C-FIND context")
		os.Exit(1)
	}
	var echo, find []time.Duration
	matches := 0
	for i := 0; i < *n+5; i++ { // 5 warm-up rounds
		t0 := time.Now()
		if err := cl.Echo(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "qrbench: echo:", err)
			os.Exit(1)
		}
		t1 := time.Now()
		m := 0
		rsp, err := cl.Find(ctx, pc.ID, ids, func(*dicom.DataSet) error { m++; return nil })
		t2 := time.Now()
		if err != nil || dimse.CategoryOf(rsp.Status) == dimse.CategoryFailure {
			fmt.Fprintf(os.Stderr, "qrbench: find: %v %+v\n", err, rsp)
			os.Exit(1)
		}
		if i >= 5 {
			echo, find = append(echo, t1.Sub(t0)), append(find, t2.Sub(t1))
			matches = m
		}
	}
	q := func(d []time.Duration, p float64) float64 {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000
	}
	fmt.Printf("echo median %.3f ms p90 %.3f ms; find median %.3f ms p90 %.3f ms; %d matches\n",
		q(echo, 0.5), q(echo, 0.9), q(find, 0.5), q(find, 0.9), matches)
}
