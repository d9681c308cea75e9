package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRetentionRulesChecked: a rule with a bad age, clock, name or limit
// is refused at start (Validate) and by ward config check (Check, as a
// setting serve refuses); good rules load as the archive applies them.
func TestRetentionRulesChecked(t *testing.T) {
	for _, tc := range []struct{ toml, want string }{
		{"[[retention.rules]]\nname = \"x\"\nolder_than = \"10\"\n", "older_than"},
		{"[[retention.rules]]\nname = \"x\"\nolder_than = \"0y\"\n", "older_than"},
		{"[[retention.rules]]\nname = \"x\"\nolder_than = \"10h\"\n", "older_than"},
		{"[[retention.rules]]\nolder_than = \"10y\"\n", "needs a name"},
		{"[[retention.rules]]\nname = \"x\"\nolder_than = \"10y\"\nby = \"stored\"\n", "study_date or received"},
		{"[[retention.rules]]\nname = \"x\"\nolder_than = \"10y\"\n[[retention.rules]]\nname = \"x\"\nolder_than = \"1y\"\n", "two rules"},
		{"[retention]\ninterval = \"5s\"\n", "interval"},
		{"[retention]\nmax_percent = 150\n", "max_percent"},
		{"[retention]\nmax_deletions = -1\n", "max_deletions"},
	} {
		path := filepath.Join(t.TempDir(), "ward.toml")
		if err := os.WriteFile(path, []byte(tc.toml), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, false)
		if err != nil {
			t.Fatalf("%q: %v", tc.toml, err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: Validate %v, want %q", tc.toml, err, tc.want)
		}
		refused := Refused(c.Check())
		if len(refused) != 1 || refused[0].Setting != "[retention]" || !strings.Contains(refused[0].Problem, tc.want) {
			t.Errorf("%q: Check refused %v", tc.toml, refused)
		}
	}
	path := filepath.Join(t.TempDir(), "ward.toml")
	good := "[retention]\ninterval = \"12h\"\n[[retention.rules]]\nname = \"ct\"\nolder_than = \"10y\"\nmodality = [\"ct\"]\nsource = [\"CT1\"]\n" +
		"[[retention.rules]]\nname = \"all\"\nolder_than = \"90d\"\nby = \"received\"\n"
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	rules, err := c.Retention.RetentionRules()
	if err != nil || len(rules) != 2 || rules[0].Modalities[0] != "CT" || rules[0].Sources[0] != "CT1" || rules[0].ByReceived || !rules[1].ByReceived || rules[1].OlderThan.Days != 90 {
		t.Fatalf("rules %+v %v", rules, err)
	}
	if d, err := c.Retention.RetentionInterval(); err != nil || d != 12*time.Hour {
		t.Fatalf("interval %v %v", d, err)
	}
	if n, p := c.Retention.Limits(); n != DefaultRetentionMaxDeletions || p != DefaultRetentionMaxPercent {
		t.Fatalf("limits %d %g", n, p)
	}
}
