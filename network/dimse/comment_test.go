package dimse

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestErrorCommentTruncated: an Error Comment (0000,0902, VR LO) longer
// than 64 characters goes on the wire cut to 64 bytes at a character
// boundary: never in the middle of a UTF-8 sequence (it was cut at byte
// 64 whatever it held).
func TestErrorCommentTruncated(t *testing.T) {
	for _, c := range []struct{ comment, want string }{
		{"short", "short"},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 64)},
		// "é" is 2 bytes: byte 64 would split the last one.
		{strings.Repeat("a", 63) + "é" + "z", strings.Repeat("a", 63)},
		{strings.Repeat("é", 40), strings.Repeat("é", 32)},
		// "€" is 3 bytes, "𝄞" 4.
		{"ab" + strings.Repeat("€", 30), "ab" + strings.Repeat("€", 20)},
		{strings.Repeat("a", 61) + "𝄞b", strings.Repeat("a", 61)},
	} {
		if got := TruncateLO(c.comment); got != c.want {
			t.Errorf("TruncateLO(%q) = %q, want %q", c.comment, got, c.want)
		}
		rsp := &Command{CommandField: CStoreRSP, MessageIDBeingRespondedTo: 1, CommandDataSetType: NoDataSet,
			Status: StatusOutOfResources, ErrorComment: c.comment, AffectedSOPClassUID: "1.2.3", AffectedSOPInstanceUID: "1.2.3.4"}
		back, err := DecodeCommand(rsp.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if back.ErrorComment != c.want || len(back.ErrorComment) > MaxLO || !utf8.ValidString(back.ErrorComment) {
			t.Errorf("Error Comment %q went on the wire as %q, want %q", c.comment, back.ErrorComment, c.want)
		}
	}
}
