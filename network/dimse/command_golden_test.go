package dimse

import (
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// goldenCommands are the commands of TestCommandEncodingGolden: the seeds
// of the fuzz target and the responses Ward sends most.
func goldenCommands() []*Command {
	cmds := seedCommands()
	pending := &Command{CommandField: CFindRSP, MessageIDBeingRespondedTo: 3, AffectedSOPClassUID: StudyRootFind, Status: StatusPending}
	pending.mark(tagCommandDataSetType, true)
	pending.CommandDataSetType = 1
	final := &Command{CommandField: CFindRSP, MessageIDBeingRespondedTo: 3, AffectedSOPClassUID: StudyRootFind, Status: StatusDataSetMismatch,
		ErrorComment: "an error comment longer than sixty-four characters is cut at a character boundary, ü", OffendingElement: []uint32{0x00100010}}
	final.mark(tagErrorID, true)
	final.ErrorID = 5
	stored := &Command{CommandField: CStoreRSP, MessageIDBeingRespondedTo: 4, AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.2",
		AffectedSOPInstanceUID: "1.2.3.45", Status: StatusSuccess}
	get := &Command{CommandField: CGetRSP, MessageIDBeingRespondedTo: 5, AffectedSOPClassUID: StudyRootGet, Status: StatusSubOpsWarning}
	get.SetCounts(0, 3, 1, 0, false)
	req := &Command{CommandField: CStoreRQ, MessageID: 8, RequestedSOPClassUID: "1.2.840.10008.5.1.4.1.1.4", RequestedSOPInstanceUID: "1.2.3.4.56",
		AffectedSOPClassUID: "1.2.840.10008.5.1.4.1.1.4", AffectedSOPInstanceUID: "1.2.3.4.56", MoveOriginatorAET: "A-VERY-LONG-AE-TITLE-CUT"}
	return append(cmds, pending, final, stored, get, req)
}

// TestCommandEncodingGolden: the bytes of encoded command sets do not
// change (testdata/commands.golden, one hex line per command;
// WARD_UPDATE_GOLDEN=1 rewrites it).
func TestCommandEncodingGolden(t *testing.T) {
	var lines []string
	for _, c := range goldenCommands() {
		lines = append(lines, hex.EncodeToString(c.Encode()))
	}
	got := strings.Join(lines, "\n") + "\n"
	const path = "testdata/commands.golden"
	if os.Getenv("WARD_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("encoding changed:\n got %s\nwant %s", got, want)
	}
}
