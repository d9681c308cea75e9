// Package termsafe makes text that came from the network or from stored
// data safe to print on a terminal. A calling AE title, an error comment, a
// patient name or a line of an edited audit log may hold control
// characters: an escape sequence (ESC ] 0 ; … BEL retitles a terminal,
// others move the cursor or rewrite what is shown), a newline or tab that
// forges a line or a column, bidirectional overrides that reorder what is
// read. What is printed shows such characters escaped the way Ward's own
// log (log/slog's text handler) shows them: Go escapes (\x1b, \n, \t,
// \u202e; an invalid UTF-8 byte as \xff), the value then in double quotes.
package termsafe

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// safe reports whether every rune of s is printable (a space is; tabs,
// newlines, other controls, format characters such as U+202E and invalid
// UTF-8 are not), and s holds none of the characters in extra.
func safe(s, extra string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return false
		}
		if !unicode.IsPrint(r) || strings.ContainsRune(extra, r) {
			return false
		}
		i += n
	}
	return true
}

// Quote returns s unchanged when it is safe to print as one field, and
// otherwise in double quotes with Go escapes (strconv.Quote), as slog's
// text handler does. A value holding a double quote or a backslash is
// quoted too, so that no value can pass for an escaped one.
func Quote(s string) string {
	if safe(s, `"\`) {
		return s
	}
	return strconv.Quote(s)
}

// List joins items with sep, each as Quote gives it, and an item that holds
// sep quoted too (a patient ID "A,B" is not two).
func List(items []string, sep string) string {
	out := make([]string, len(items))
	for i, s := range items {
		q := Quote(s)
		if q == s && sep != "" && strings.Contains(s, sep) {
			q = strconv.Quote(s)
		}
		out[i] = q
	}
	return strings.Join(out, sep)
}

// Text escapes, in place, every rune of s that is not printable, and
// leaves the rest (quotes and backslashes included) as it is: for long
// text such as an XML message. keep lists control characters left as they
// are (an error made of several lines keeps its "\n").
func Text(s, keep string) string {
	if safe(s, "") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteString(fmt.Sprintf(`\x%02x`, s[i]))
		case unicode.IsPrint(r) || strings.ContainsRune(keep, r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRune(r) // 'x' with x escaped
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}
