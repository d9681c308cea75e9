package server

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-pacs/ward/dicom"
	"github.com/ward-pacs/ward/internal/config"
	"github.com/ward-pacs/ward/network/assoc"
	"github.com/ward-pacs/ward/network/dimse"
	"github.com/ward-pacs/ward/network/pdu"
	"github.com/ward-pacs/ward/store"
	"github.com/ward-pacs/ward/test/harness"
)

// findMatches is the number of matches of each C-FIND of BenchmarkCFind.
const findMatches = 1000

// findRoot is the UID root of BenchmarkCFind's instances.
const findRoot = "1.2.826.0.1.3680043.10.1432.98"

// BenchmarkCFind measures the cost per match of a C-FIND with 1,000
// matches through the whole stack (policy, audit, the archive's query,
// DIMSE responses over loopback TCP, read by Ward's SCU, as
// internal/cmd/qrbench does), at study level with the keys of
// scripts/bench-cluster.sh, at study level with the keys a viewer's
// worklist asks, and at instance level. ns/match and allocs/match
// (client and server together: they share the process) are the figures;
// cpu-ns/match is the process's CPU time (user and system, client and
// server), steadier than ns/match on a shared machine. sqlite is the
// embedded index, postgres a throwaway cluster (test/harness; skipped
// when PostgreSQL is not installed; its server's CPU is not counted).
//
//	go test -run '^$' -bench CFind -benchtime 20x -count 3 ./internal/server
func BenchmarkCFind(b *testing.B) {
	queries := []struct {
		name string
		kv   []string
	}{
		{"STUDY", []string{"QueryRetrieveLevel", "STUDY", "PatientName", "WILSON*", "StudyInstanceUID", "", "PatientID", ""}},
		{"STUDY-wide", []string{"QueryRetrieveLevel", "STUDY", "PatientName", "WILSON*", "StudyInstanceUID", "", "PatientID", "",
			"PatientBirthDate", "", "PatientSex", "", "StudyDate", "", "StudyTime", "", "AccessionNumber", "", "StudyID", "",
			"StudyDescription", "", "ReferringPhysicianName", "", "ModalitiesInStudy", "", "NumberOfStudyRelatedSeries", "",
			"NumberOfStudyRelatedInstances", ""}},
		{"IMAGE", []string{"QueryRetrieveLevel", "IMAGE", "StudyInstanceUID", findRoot + ".1.0", "SeriesInstanceUID", findRoot + ".2.0",
			"SOPInstanceUID", "", "SOPClassUID", "", "InstanceNumber", ""}},
	}
	for _, index := range []string{"sqlite", "postgres"} {
		b.Run(index, func(b *testing.B) {
			dsn := ""
			if index == "postgres" {
				dsn = harness.StartPostgres(b).NewDatabase(b)
			}
			s := benchServer(b, func(c *config.Config) {
				c.Query.MaxResults = -1
				c.Storage.Index = dsn
			})
			fillFind(b, s.Index())
			if dsn != "" {
				// Statistics, as autovacuum would gather them in time: the
				// plans are otherwise those of empty tables.
				analyze(b, dsn)
			}
			cl := dialFind(b, s.Addr().String())
			defer cl.A.Release()
			for _, q := range queries {
				b.Run(q.name, func(b *testing.B) {
					benchFind(b, cl, findIdentifier(b, q.kv))
				})
			}
		})
	}
}

// fillFind indexes 1,000 studies (1 to 1,000) of patients WILSON^n, one
// instance each, and study 0 of patient JONES^0: one series of 1,000
// instances.
func fillFind(b *testing.B, ix store.Index) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inst := func(study, series, n int) *store.Instance {
		return &store.Instance{
			SOPInstanceUID: fmt.Sprintf("%s.3.%d.%d", findRoot, study, n), SOPClassUID: ctImageStorage,
			TransferSyntaxUID: dicom.ExplicitVRLittleEndian.UID, InstanceNumber: fmt.Sprint(n + 1), Rows: 512, Columns: 512,
			SeriesInstanceUID: fmt.Sprintf("%s.2.%d", findRoot, series), Modality: "CT", SeriesNumber: "1", SeriesDescription: "CT series",
			StudyInstanceUID: fmt.Sprintf("%s.1.%d", findRoot, study), StudyDate: fmt.Sprintf("2020%02d%02d", study%12+1, study%28+1),
			StudyTime: "101500", AccessionNumber: fmt.Sprintf("ACC%06d", study), StudyID: fmt.Sprint(study),
			StudyDescription: "CT chest", ReferringPhysicianName: "REFERRER^ANNA",
			PatientID: fmt.Sprintf("PID%06d", study), PatientName: fmt.Sprintf("WILSON^%d", study), PatientBirthDate: "19600101", PatientSex: "F",
			SpecificCharacterSet: "ISO_IR 192", SourceAET: "BENCH", SourceAddr: "127.0.0.1:104", ReceivedAt: at,
			BlobKey: fmt.Sprintf("bench-find-%d-%d", study, n), Size: 1000,
		}
	}
	var ins []*store.Instance
	for st := 1; st <= findMatches; st++ {
		ins = append(ins, inst(st, st, 0))
	}
	for n := 0; n < findMatches; n++ {
		in := inst(0, 0, n)
		in.PatientName = "JONES^0"
		ins = append(ins, in)
	}
	write := func(ctx context.Context, in *store.Instance) error {
		_, err := ix.Put(ctx, in)
		return err
	}
	if w, ok := ix.(store.Inserter); ok {
		write = w.Insert
	}
	// Several writers at once, so that their commits are grouped.
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(ins) {
					return
				}
				if err := write(context.Background(), ins[i]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

func analyze(b *testing.B, dsn string) {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
}

func findIdentifier(b *testing.B, kv []string) *dicom.DataSet {
	ds := &dicom.DataSet{}
	for i := 0; i < len(kv); i += 2 {
		tag, ok := dicom.TagByKeyword(kv[i])
		if !ok {
			b.Fatalf("unknown keyword %s", kv[i])
		}
		if kv[i+1] == "" {
			ds.Put(&dicom.Element{Tag: tag, VR: dicom.VROf(tag)})
			continue
		}
		ds.Set(tag, kv[i+1])
	}
	return ds
}

func dialFind(b *testing.B, addr string) *dimse.Client {
	ts := []string{dicom.ExplicitVRLittleEndian.UID}
	rq := &pdu.AssociateRQ{ProtocolVersion: 1, CalledAETitle: "WARD", CallingAETitle: "BENCH", ApplicationContext: pdu.ApplicationContextName,
		Contexts: []pdu.PresentationContext{{ID: 1, AbstractSyntax: dimse.StudyRootFind, TransferSyntaxes: ts}}}
	a, err := assoc.Dial(context.Background(), "tcp", addr, assoc.Config{AETitle: "BENCH"}, rq)
	if err != nil {
		b.Fatal(err)
	}
	return dimse.NewClient(a)
}

// benchFind runs b.N C-FINDs of identifier, each to have findMatches
// matches, and reports the time and allocations per match.
func benchFind(b *testing.B, cl *dimse.Client, identifier *dicom.DataSet) {
	find := func() {
		n := 0
		rsp, err := cl.Find(context.Background(), 1, identifier, func(*dicom.DataSet) error { n++; return nil })
		if err != nil || rsp.Status != dimse.StatusSuccess || n != findMatches {
			b.Fatalf("C-FIND: %v, status %#04x (%s), %d matches, want %d", err, rsp.Status, rsp.ErrorComment, n, findMatches)
		}
	}
	find() // warm: prepared statements, caches
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		find()
	}
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	runtime.ReadMemStats(&m1)
	matches := float64(b.N * findMatches)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/matches, "ns/match")
	b.ReportMetric(float64(cpu.Nanoseconds())/matches, "cpu-ns/match")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/matches, "allocs/match")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/matches, "B/match")
}

// cpuTime is the CPU time (user and system) the process has used: on a
// shared machine a steadier figure than the elapsed time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
