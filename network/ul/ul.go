// Package ul holds the DICOM upper layer state machine of PS3.8 section 9.2,
// transcribed from Table 9-10 as data: states Sta1..Sta13, events
// Evt1..Evt19 and actions named as the standard names them (AE-1, DT-2,
// AR-8, AA-3, ...). It executes nothing: network/assoc performs the actions.
//
// A state/event pair that is not in the table is a protocol error: the
// association is aborted (Lookup returns ok=false and assoc applies AA-8, or
// AA-2 where no connection is open).
package ul

import "fmt"

// State is an upper layer state (PS3.8 Table 9-2).
type State uint8

// The states.
const (
	Sta1  State = 1 + iota // Idle
	Sta2                   // Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
	Sta3                   // Awaiting local A-ASSOCIATE response primitive
	Sta4                   // Awaiting transport connection opening to complete
	Sta5                   // Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
	Sta6                   // Association established and ready for data transfer
	Sta7                   // Awaiting A-RELEASE-RP PDU
	Sta8                   // Awaiting local A-RELEASE response primitive
	Sta9                   // Release collision requestor side; awaiting A-RELEASE response primitive
	Sta10                  // Release collision acceptor side; awaiting A-RELEASE-RP PDU
	Sta11                  // Release collision requestor side; awaiting A-RELEASE-RP PDU
	Sta12                  // Release collision acceptor side; awaiting A-RELEASE response primitive
	Sta13                  // Awaiting Transport Connection Close Indication
)

// NumStates is the number of states.
const NumStates = 13

func (s State) String() string { return fmt.Sprintf("Sta%d", uint8(s)) }

// Event is an upper layer event (PS3.8 Table 9-3).
type Event uint8

// The events.
const (
	Evt1  Event = 1 + iota // A-ASSOCIATE request (local user)
	Evt2                   // Transport connect confirmation (local transport service)
	Evt3                   // A-ASSOCIATE-AC PDU (received on transport connection)
	Evt4                   // A-ASSOCIATE-RJ PDU (received on transport connection)
	Evt5                   // Transport connection indication (local transport service)
	Evt6                   // A-ASSOCIATE-RQ PDU (received on transport connection)
	Evt7                   // A-ASSOCIATE response primitive (accept)
	Evt8                   // A-ASSOCIATE response primitive (reject)
	Evt9                   // P-DATA request primitive
	Evt10                  // P-DATA-TF PDU
	Evt11                  // A-RELEASE request primitive
	Evt12                  // A-RELEASE-RQ PDU (received on open transport connection)
	Evt13                  // A-RELEASE-RP PDU (received on transport connection)
	Evt14                  // A-RELEASE response primitive
	Evt15                  // A-ABORT request primitive
	Evt16                  // A-ABORT PDU (received on open transport connection)
	Evt17                  // Transport connection closed indication (local transport service)
	Evt18                  // ARTIM timer expired (Association reject/release timer)
	Evt19                  // Unrecognized or invalid PDU received
)

// NumEvents is the number of events.
const NumEvents = 19

func (e Event) String() string { return fmt.Sprintf("Evt%d", uint8(e)) }

// Action is an upper layer action (PS3.8 Tables 9-6 to 9-9).
type Action uint8

// The actions.
const (
	None Action = iota
	AE1         // Issue TRANSPORT CONNECT request primitive to local transport service
	AE2         // Send A-ASSOCIATE-RQ PDU
	AE3         // Issue A-ASSOCIATE confirmation (accept) primitive
	AE4         // Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection
	AE5         // Issue Transport connection response primitive; start ARTIM timer
	AE6         // Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable issue A-ASSOCIATE indication, otherwise send A-ASSOCIATE-RJ PDU and start ARTIM
	AE7         // Send A-ASSOCIATE-AC PDU
	AE8         // Send A-ASSOCIATE-RJ PDU and start ARTIM timer
	DT1         // Send P-DATA-TF PDU
	DT2         // Send P-DATA indication primitive
	AR1         // Send A-RELEASE-RQ PDU
	AR2         // Issue A-RELEASE indication primitive
	AR3         // Issue A-RELEASE confirmation primitive, and close transport connection
	AR4         // Issue A-RELEASE-RP PDU and start ARTIM timer
	AR5         // Stop ARTIM timer
	AR6         // Issue P-DATA indication
	AR7         // Issue P-DATA-TF PDU
	AR8         // Issue A-RELEASE indication (release collision)
	AR9         // Send A-RELEASE-RP PDU
	AR10        // Issue A-RELEASE confirmation primitive
	AA1         // Send A-ABORT PDU (service-user source) and start (or restart) ARTIM timer
	AA2         // Stop ARTIM timer if running. Close transport connection
	AA3         // Issue A-ABORT or A-P-ABORT indication and close transport connection
	AA4         // Issue A-P-ABORT indication primitive
	AA5         // Stop ARTIM timer
	AA6         // Ignore PDU
	AA7         // Send A-ABORT PDU
	AA8         // Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and start ARTIM timer
)

var actionNames = [...]string{"none",
	"AE-1", "AE-2", "AE-3", "AE-4", "AE-5", "AE-6", "AE-7", "AE-8",
	"DT-1", "DT-2",
	"AR-1", "AR-2", "AR-3", "AR-4", "AR-5", "AR-6", "AR-7", "AR-8", "AR-9", "AR-10",
	"AA-1", "AA-2", "AA-3", "AA-4", "AA-5", "AA-6", "AA-7", "AA-8"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Next is the state an action leads to. AE-6 and AR-8 have two possible
// next states; Next gives the first (AE-6: Sta3; AR-8: Sta9) and the
// executor picks the other when the standard says so (AE-6: Sta13 when the
// request is rejected; AR-8: Sta10 on the acceptor side).
var Next = [...]State{
	None: 0,
	AE1:  Sta4, AE2: Sta5, AE3: Sta6, AE4: Sta1, AE5: Sta2, AE6: Sta3, AE7: Sta6, AE8: Sta13,
	DT1: Sta6, DT2: Sta6,
	AR1: Sta7, AR2: Sta8, AR3: Sta1, AR4: Sta13, AR5: Sta1, AR6: Sta7, AR7: Sta8, AR8: Sta9, AR9: Sta11, AR10: Sta12,
	AA1: Sta13, AA2: Sta1, AA3: Sta1, AA4: Sta1, AA5: Sta1, AA6: Sta13, AA7: Sta13, AA8: Sta13,
}

// row builds one event's row: the action for each state.
func row(cells map[State]Action) [NumStates + 1]Action {
	var r [NumStates + 1]Action
	for s, a := range cells {
		r[s] = a
	}
	return r
}

// all6to12 gives the same action for Sta6 to Sta12.
func all6to12(a Action, more map[State]Action) map[State]Action {
	m := map[State]Action{}
	for s := Sta6; s <= Sta12; s++ {
		m[s] = a
	}
	for s, x := range more {
		m[s] = x
	}
	return m
}

// Table is PS3.8 Table 9-10: Table[event][state] is the action, None where
// the cell is empty.
var Table = [NumEvents + 1][NumStates + 1]Action{
	Evt1:  row(map[State]Action{Sta1: AE1}),
	Evt2:  row(map[State]Action{Sta4: AE2}),
	Evt3:  row(all6to12(AA8, map[State]Action{Sta2: AA1, Sta3: AA8, Sta5: AE3, Sta13: AA6})),
	Evt4:  row(all6to12(AA8, map[State]Action{Sta2: AA1, Sta3: AA8, Sta5: AE4, Sta13: AA6})),
	Evt5:  row(map[State]Action{Sta1: AE5}),
	Evt6:  row(all6to12(AA8, map[State]Action{Sta2: AE6, Sta3: AA8, Sta5: AA8, Sta13: AA7})),
	Evt7:  row(map[State]Action{Sta3: AE7}),
	Evt8:  row(map[State]Action{Sta3: AE8}),
	Evt9:  row(map[State]Action{Sta6: DT1, Sta8: AR7}),
	Evt10: row(all6to12(AA8, map[State]Action{Sta2: AA1, Sta3: AA8, Sta5: AA8, Sta6: DT2, Sta7: AR6, Sta13: AA6})),
	Evt11: row(map[State]Action{Sta6: AR1}),
	Evt12: row(all6to12(AA8, map[State]Action{Sta2: AA1, Sta3: AA8, Sta5: AA8, Sta6: AR2, Sta7: AR8, Sta13: AA6})),
	Evt13: row(all6to12(AA8, map[State]Action{Sta2: AA1, Sta3: AA8, Sta5: AA8, Sta7: AR3, Sta10: AR10, Sta11: AR3, Sta13: AA6})),
	Evt14: row(map[State]Action{Sta8: AR4, Sta9: AR9, Sta12: AR4}),
	Evt15: row(all6to12(AA1, map[State]Action{Sta3: AA1, Sta4: AA2, Sta5: AA1})),
	Evt16: row(all6to12(AA3, map[State]Action{Sta2: AA2, Sta3: AA3, Sta5: AA3, Sta13: AA2})),
	Evt17: row(all6to12(AA4, map[State]Action{Sta2: AA5, Sta3: AA4, Sta4: AA4, Sta5: AA4, Sta13: AR5})),
	Evt18: row(map[State]Action{Sta2: AA2, Sta13: AA2}),
	Evt19: row(all6to12(AA8, map[State]Action{Sta2: AA1, Sta3: AA8, Sta5: AA8, Sta13: AA7})),
}

// Lookup returns the action for event e in state s; ok is false when the
// table has no entry for the pair.
func Lookup(s State, e Event) (a Action, ok bool) {
	if s < Sta1 || s > Sta13 || e < Evt1 || e > Evt19 {
		return None, false
	}
	a = Table[e][s]
	return a, a != None
}
