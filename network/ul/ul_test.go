package ul

import (
	"fmt"
	"testing"
)

// table910 is PS3.8 Table 9-10 transcribed again, independently of Table,
// one line per non-empty cell, as "EvtN StaM ACTION". Checked against the
// standard's text and against pynetdicom's transition table.
var table910 = []string{
	"Evt1 Sta1 AE-1",
	"Evt2 Sta4 AE-2",
	"Evt3 Sta2 AA-1", "Evt3 Sta3 AA-8", "Evt3 Sta5 AE-3", "Evt3 Sta6 AA-8", "Evt3 Sta7 AA-8", "Evt3 Sta8 AA-8", "Evt3 Sta9 AA-8", "Evt3 Sta10 AA-8", "Evt3 Sta11 AA-8", "Evt3 Sta12 AA-8", "Evt3 Sta13 AA-6",
	"Evt4 Sta2 AA-1", "Evt4 Sta3 AA-8", "Evt4 Sta5 AE-4", "Evt4 Sta6 AA-8", "Evt4 Sta7 AA-8", "Evt4 Sta8 AA-8", "Evt4 Sta9 AA-8", "Evt4 Sta10 AA-8", "Evt4 Sta11 AA-8", "Evt4 Sta12 AA-8", "Evt4 Sta13 AA-6",
	"Evt5 Sta1 AE-5",
	"Evt6 Sta2 AE-6", "Evt6 Sta3 AA-8", "Evt6 Sta5 AA-8", "Evt6 Sta6 AA-8", "Evt6 Sta7 AA-8", "Evt6 Sta8 AA-8", "Evt6 Sta9 AA-8", "Evt6 Sta10 AA-8", "Evt6 Sta11 AA-8", "Evt6 Sta12 AA-8", "Evt6 Sta13 AA-7",
	"Evt7 Sta3 AE-7",
	"Evt8 Sta3 AE-8",
	"Evt9 Sta6 DT-1", "Evt9 Sta8 AR-7",
	"Evt10 Sta2 AA-1", "Evt10 Sta3 AA-8", "Evt10 Sta5 AA-8", "Evt10 Sta6 DT-2", "Evt10 Sta7 AR-6", "Evt10 Sta8 AA-8", "Evt10 Sta9 AA-8", "Evt10 Sta10 AA-8", "Evt10 Sta11 AA-8", "Evt10 Sta12 AA-8", "Evt10 Sta13 AA-6",
	"Evt11 Sta6 AR-1",
	"Evt12 Sta2 AA-1", "Evt12 Sta3 AA-8", "Evt12 Sta5 AA-8", "Evt12 Sta6 AR-2", "Evt12 Sta7 AR-8", "Evt12 Sta8 AA-8", "Evt12 Sta9 AA-8", "Evt12 Sta10 AA-8", "Evt12 Sta11 AA-8", "Evt12 Sta12 AA-8", "Evt12 Sta13 AA-6",
	"Evt13 Sta2 AA-1", "Evt13 Sta3 AA-8", "Evt13 Sta5 AA-8", "Evt13 Sta6 AA-8", "Evt13 Sta7 AR-3", "Evt13 Sta8 AA-8", "Evt13 Sta9 AA-8", "Evt13 Sta10 AR-10", "Evt13 Sta11 AR-3", "Evt13 Sta12 AA-8", "Evt13 Sta13 AA-6",
	"Evt14 Sta8 AR-4", "Evt14 Sta9 AR-9", "Evt14 Sta12 AR-4",
	"Evt15 Sta3 AA-1", "Evt15 Sta4 AA-2", "Evt15 Sta5 AA-1", "Evt15 Sta6 AA-1", "Evt15 Sta7 AA-1", "Evt15 Sta8 AA-1", "Evt15 Sta9 AA-1", "Evt15 Sta10 AA-1", "Evt15 Sta11 AA-1", "Evt15 Sta12 AA-1",
	"Evt16 Sta2 AA-2", "Evt16 Sta3 AA-3", "Evt16 Sta5 AA-3", "Evt16 Sta6 AA-3", "Evt16 Sta7 AA-3", "Evt16 Sta8 AA-3", "Evt16 Sta9 AA-3", "Evt16 Sta10 AA-3", "Evt16 Sta11 AA-3", "Evt16 Sta12 AA-3", "Evt16 Sta13 AA-2",
	"Evt17 Sta2 AA-5", "Evt17 Sta3 AA-4", "Evt17 Sta4 AA-4", "Evt17 Sta5 AA-4", "Evt17 Sta6 AA-4", "Evt17 Sta7 AA-4", "Evt17 Sta8 AA-4", "Evt17 Sta9 AA-4", "Evt17 Sta10 AA-4", "Evt17 Sta11 AA-4", "Evt17 Sta12 AA-4", "Evt17 Sta13 AR-5",
	"Evt18 Sta2 AA-2", "Evt18 Sta13 AA-2",
	"Evt19 Sta2 AA-1", "Evt19 Sta3 AA-8", "Evt19 Sta5 AA-8", "Evt19 Sta6 AA-8", "Evt19 Sta7 AA-8", "Evt19 Sta8 AA-8", "Evt19 Sta9 AA-8", "Evt19 Sta10 AA-8", "Evt19 Sta11 AA-8", "Evt19 Sta12 AA-8", "Evt19 Sta13 AA-7",
}

func TestTableMatchesPS38(t *testing.T) {
	want := map[string]string{}
	for _, line := range table910 {
		var e, s, a string
		if _, err := fmt.Sscan(line, &e, &s, &a); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if _, dup := want[e+" "+s]; dup {
			t.Fatalf("duplicate cell %s %s", e, s)
		}
		want[e+" "+s] = a
	}
	n := 0
	for e := Evt1; e <= Evt19; e++ {
		for s := Sta1; s <= Sta13; s++ {
			cell := e.String() + " " + s.String()
			got, ok := Lookup(s, e)
			w, wok := want[cell]
			switch {
			case ok != wok:
				t.Errorf("%s: table has %v (ok=%v), PS3.8 has %q", cell, got, ok, w)
			case ok && got.String() != w:
				t.Errorf("%s: table has %s, PS3.8 has %s", cell, got, w)
			}
			if ok {
				n++
			}
		}
	}
	if n != len(table910) {
		t.Errorf("%d non-empty cells, PS3.8 has %d", n, len(table910))
	}
}

// TestNext checks the next state of every action (PS3.8 Tables 9-6 to 9-9).
func TestNext(t *testing.T) {
	want := map[string]State{
		"AE-1": Sta4, "AE-2": Sta5, "AE-3": Sta6, "AE-4": Sta1, "AE-5": Sta2, "AE-6": Sta3, "AE-7": Sta6, "AE-8": Sta13,
		"DT-1": Sta6, "DT-2": Sta6,
		"AR-1": Sta7, "AR-2": Sta8, "AR-3": Sta1, "AR-4": Sta13, "AR-5": Sta1, "AR-6": Sta7, "AR-7": Sta8, "AR-8": Sta9, "AR-9": Sta11, "AR-10": Sta12,
		"AA-1": Sta13, "AA-2": Sta1, "AA-3": Sta1, "AA-4": Sta1, "AA-5": Sta1, "AA-6": Sta13, "AA-7": Sta13, "AA-8": Sta13,
	}
	for a := AE1; a <= AA8; a++ {
		if w, ok := want[a.String()]; !ok || Next[a] != w {
			t.Errorf("Next[%s] = %s, want %s", a, Next[a], w)
		}
	}
	if len(want) != int(AA8) {
		t.Errorf("%d actions, want %d", AA8, len(want))
	}
}

func TestLookupOutOfRange(t *testing.T) {
	for _, c := range []struct {
		s State
		e Event
	}{{0, Evt1}, {Sta13 + 1, Evt3}, {Sta2, 0}, {Sta2, Evt19 + 1}} {
		if a, ok := Lookup(c.s, c.e); ok || a != None {
			t.Errorf("Lookup(%d, %d) = %v, %v", c.s, c.e, a, ok)
		}
	}
}
