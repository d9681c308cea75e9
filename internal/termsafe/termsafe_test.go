package termsafe

import (
	"strings"
	"testing"
)

// The values the tester sent as calling AE titles, and others of
// the same kind: none reaches the terminal raw.
func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"WORKSTATION", "WORKSTATION"},
		{"MY AE", "MY AE"},
		{"", ""},
		{"Müller^Jürgen", "Müller^Jürgen"},
		{"\x1b]0;X\x07A", `"\x1b]0;X\aA"`},
		{"A\nFAKE\tline", `"A\nFAKE\tline"`},
		{"A\rB", `"A\rB"`},
		{"evil\u202etxt", `"evil\u202etxt"`},
		{"bad\xffutf8", `"bad\xffutf8"`},
		{`say "hi"`, `"say \"hi\""`},
		{`C:\x1b`, `"C:\\x1b"`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestList(t *testing.T) {
	if got := List([]string{"P1", "A,B", "X\x1bY"}, ","); got != `P1,"A,B","X\x1bY"` {
		t.Errorf("List = %s", got)
	}
}

func TestText(t *testing.T) {
	in := "<A x=\"1\">\x1b[2J\u202e\xfe\x01</A>\nnext"
	got := Text(in, "\n")
	if strings.ContainsAny(got, "\x1b\u202e") || !strings.Contains(got, "\n") {
		t.Errorf("Text = %q", got)
	}
	if want := "<A x=\"1\">\\x1b[2J\\u202e\\xfe\\x01</A>\nnext"; got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	if got := Text("plain <xml/>", ""); got != "plain <xml/>" {
		t.Errorf("Text changed a safe string: %q", got)
	}
}

func FuzzQuote(f *testing.F) {
	f.Add("\x1b]0;X\x07A")
	f.Add("A\nFAKE\tline")
	f.Fuzz(func(t *testing.T, s string) {
		for _, out := range []string{Quote(s), Text(s, ""), List([]string{s, s}, ",")} {
			for _, r := range out {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' {
					t.Fatalf("%q printed as %q", s, out)
				}
			}
		}
	})
}
