// Package synth plans synthetic archives for benchmarks at scale: patients,
// studies, series and instances with realistic shapes and skews, the same
// for a given size and seed whichever way they are loaded.
//
// Two ways load them. A backend may bulk-load the plan in key order, which
// is fast but flatters locality (sqlite.BuildSynthetic does). LoadArrival
// sends the same instances through an Index's ordinary write path
// (store.Inserter, else Put), several senders at once, studies in a
// shuffled order, as modalities would: rows land in arrival order and each
// write is a durable transaction.
//
// Shape: 2 studies per patient, 3 series per study, 25 to 75 (about 50)
// instances per series; patient names "SURNAME^GIVEN" drawn from 120
// surnames with a skewed distribution, so that prefix wildcards match sets;
// study dates spread over 2015-2024; modalities CT, MR, CR and US with their
// image storage SOP classes. UIDs are Root.1.N (studies), Root.2.N (series)
// and Root.3.N (instances), numbered in plan order.
package synth

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-pacs/ward/store"
)

// Root is the UID root of synthetic objects.
const Root = "1.2.826.0.1.3680043.10.1432.99"

// Patient is one planned patient with its studies.
type Patient struct {
	ID, Name, NameNorm, BirthDate, Sex string
	Studies                            []Study
}

// Study is one planned study.
type Study struct {
	UID, Date, Time, Accession, ID        string
	Description, Referring, ReferringNorm string
	Modality, SOPClass, BodyPart          string
	Series                                []Series
}

// Series is one planned series: Sizes[i] is the object size of its i-th
// instance, whose UID is Root.3.(First+i).
type Series struct {
	UID    string
	Number string
	First  int
	Sizes  []int64
}

// Instances counts the patient's instances.
func (p *Patient) Instances() int {
	n := 0
	for _, st := range p.Studies {
		n += st.Instances()
	}
	return n
}

// Instances counts the study's instances.
func (st *Study) Instances() int {
	n := 0
	for _, se := range st.Series {
		n += len(se.Sizes)
	}
	return n
}

// InstanceUID is the SOP Instance UID of the instance numbered seq.
func InstanceUID(seq int) string { return fmt.Sprintf("%s.3.%d", Root, seq) }

// BlobKey is the (absent) blob key synthetic rows carry.
func BlobKey(seq int) string { return fmt.Sprintf("synth-%d", seq) }

// Instance is the index record of the i-th instance of series se of study
// st of patient p, received at at.
func (p *Patient) Instance(st *Study, se *Series, i int, at time.Time) *store.Instance {
	seq := se.First + i
	return &store.Instance{
		SOPInstanceUID: InstanceUID(seq), SOPClassUID: st.SOPClass, TransferSyntaxUID: "1.2.840.10008.1.2.1",
		InstanceNumber: fmt.Sprint(i + 1), ContentDate: st.Date, ContentTime: st.Time, NumberOfFrames: "1",
		Rows: 512, Columns: 512,
		SeriesInstanceUID: se.UID, Modality: st.Modality, SeriesNumber: se.Number,
		SeriesDescription: st.Modality + " series", SeriesDate: st.Date, SeriesTime: st.Time,
		BodyPartExamined: st.BodyPart, PerformedProcedureStepStartDate: st.Date,
		StudyInstanceUID: st.UID, StudyDate: st.Date, StudyTime: st.Time, AccessionNumber: st.Accession,
		StudyID: st.ID, StudyDescription: st.Description, ReferringPhysicianName: st.Referring,
		PatientID: p.ID, PatientName: p.Name, PatientBirthDate: p.BirthDate, PatientSex: p.Sex,
		SpecificCharacterSet: "ISO_IR 192", SourceAET: "SYNTH", SourceAddr: "192.0.2.1:104", ReceivedAt: at,
		BlobKey: BlobKey(seq), Size: se.Sizes[i],
	}
}

var surnames = []string{
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
	"Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
	"Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
	"Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
	"Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
	"Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
	"Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
	"Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco",
	"Doe", "Doerr", "Dürer", "Dorn", "Dobson", "Dodd", "Dolan", "Donovan", "Dowling", "Doyle",
	"Kowalski", "Nowak", "Wiśniewski", "Novák", "Svoboda", "Jensen", "Nielsen", "Hansen", "Andersson", "Johansson",
	"Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Kim", "Park", "Chen", "Wang", "Li",
	"O'Brien", "Murphy", "Kelly", "Walsh", "Byrne", "Ryan", "Silva", "Santos", "Oliveira", "Costa",
}

var given = []string{
	"James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
	"David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Anna", "Hans", "Marie", "Pierre",
	"Giulia", "Marco", "Yuki", "Hiro", "Min", "Wei", "Lars", "Ingrid", "Jan", "Eva",
}

var modalities = []struct{ modality, sopClass, body string }{
	{"CT", "1.2.840.10008.5.1.4.1.1.2", "CHEST"},
	{"MR", "1.2.840.10008.5.1.4.1.1.4", "HEAD"},
	{"CR", "1.2.840.10008.5.1.4.1.1.1", "CHEST"},
	{"US", "1.2.840.10008.5.1.4.1.1.6.1", "ABDOMEN"},
}

// Generate plans an archive of n instances and hands each patient to
// yield, in plan order. It is deterministic for n and seed.
func Generate(ctx context.Context, n int, seed int64, yield func(*Patient) error) error {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5741524400000000))
	day0 := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	done, pat, studySeq, seriesSeq := 0, 0, 0, 0
	for done < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		pat++
		var sizes [2][3]int
		total := 0
		for s := range sizes {
			for r := range sizes[s] {
				k := 25 + rng.IntN(51)
				if k > n-done-total {
					k = n - done - total
				}
				sizes[s][r] = k
				total += k
			}
		}
		// Skewed surname choice: the square of a uniform favours the head
		// of the list.
		u := rng.Float64()
		surname := surnames[int(u*u*float64(len(surnames)))]
		name := surname + "^" + given[rng.IntN(len(given))]
		p := &Patient{
			ID: fmt.Sprintf("PID%08d", pat), Name: name, NameNorm: store.NormalizePN(name),
			BirthDate: day0.AddDate(-20-rng.IntN(70), 0, -rng.IntN(365)).Format("20060102"),
			Sex:       [...]string{"M", "F"}[rng.IntN(2)],
		}
		for s := range sizes {
			if sizes[s][0] == 0 {
				continue
			}
			studySeq++
			m := modalities[rng.IntN(len(modalities))]
			date := day0.AddDate(0, 0, rng.IntN(3652)).Format("20060102")
			tm := fmt.Sprintf("%02d%02d%02d", 7+rng.IntN(12), rng.IntN(60), rng.IntN(60))
			ref := surnames[rng.IntN(len(surnames))] + "^" + given[rng.IntN(len(given))]
			st := Study{
				UID: fmt.Sprintf("%s.1.%d", Root, studySeq), Date: date, Time: tm,
				Accession: fmt.Sprintf("ACC%09d", studySeq), ID: fmt.Sprint(studySeq),
				Description: m.modality + " " + m.body, Referring: ref, ReferringNorm: store.NormalizePN(ref),
				Modality: m.modality, SOPClass: m.sopClass, BodyPart: m.body,
			}
			for r, k := range sizes[s] {
				if k == 0 {
					continue
				}
				seriesSeq++
				se := Series{UID: fmt.Sprintf("%s.2.%d", Root, seriesSeq), Number: fmt.Sprint(r + 1),
					First: done + 1, Sizes: make([]int64, k)}
				for i := range se.Sizes {
					se.Sizes[i] = int64(524288 + rng.IntN(1024))
				}
				done += k
				st.Series = append(st.Series, se)
			}
			p.Studies = append(p.Studies, st)
		}
		if err := yield(p); err != nil {
			return err
		}
	}
	return nil
}

// ArrivalOptions tune LoadArrival.
type ArrivalOptions struct {
	// Senders is how many studies are received at once, each by a sender
	// of its own, as from that many associations (default 8).
	Senders int
	// Progress, when set, is called about every 100,000 instances with the
	// number written so far.
	Progress func(written int)
}

// LoadArrival writes the plan of n instances for seed into ix through its
// ordinary write path: Insert when ix is a store.Inserter (as a C-STORE of
// a new instance does), else Put, each a durable transaction. The studies
// are received in a shuffled order, Senders at a time, each sent series by
// series, so that rows of one study interleave with those of others. It
// returns how many instances it wrote.
func LoadArrival(ctx context.Context, ix store.Index, n int, seed int64, opt ArrivalOptions) (int, error) {
	type job struct {
		p  *Patient
		st *Study
	}
	var jobs []job
	if err := Generate(ctx, n, seed, func(p *Patient) error {
		for i := range p.Studies {
			jobs = append(jobs, job{p, &p.Studies[i]})
		}
		return nil
	}); err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x4152524956414c00))
	rng.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })

	write := func(ctx context.Context, in *store.Instance) error {
		_, err := ix.Put(ctx, in)
		return err
	}
	if ins, ok := ix.(store.Inserter); ok {
		write = ins.Insert
	}
	senders := opt.Senders
	if senders <= 0 {
		senders = 8
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next, written atomic.Int64
		wg            sync.WaitGroup
		errOnce       sync.Once
		firstErr      error
	)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j := int(next.Add(1)) - 1
				if j >= len(jobs) || ctx.Err() != nil {
					return
				}
				p, st := jobs[j].p, jobs[j].st
				for s := range st.Series {
					se := &st.Series[s]
					for i := range se.Sizes {
						if err := write(ctx, p.Instance(st, se, i, time.Now().UTC())); err != nil {
							errOnce.Do(func() { firstErr = fmt.Errorf("synth: instance %d: %w", se.First+i, err); cancel() })
							return
						}
						if w := written.Add(1); opt.Progress != nil && w%100_000 == 0 {
							opt.Progress(int(w))
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	return int(written.Load()), firstErr
}
