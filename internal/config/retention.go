package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ward-pacs/ward/archive"
)

// Retention is the [retention] section: rules that delete studies once
// they are older than a period (docs/configuration.md, "Retention").
// Without rules nothing is ever deleted by age.
type Retention struct {
	// Interval between the background passes of ward serve (each
	// jittered by up to a tenth); "0" or "off": none, only ward
	// retention run. Default 24h.
	Interval string `toml:"interval"`
	// MaxDeletions caps the studies one pass deletes (default 1000); the
	// rest go at the next pass.
	MaxDeletions int `toml:"max_deletions"`
	// MaxPercent refuses a pass whose rules would delete more than this
	// share of the archive's studies (default 10), unless forced (ward
	// retention run --force).
	MaxPercent float64         `toml:"max_percent"`
	Rules      []RetentionRule `toml:"rules"`
}

// RetentionRule is one [[retention.rules]] table.
type RetentionRule struct {
	Name string `toml:"name"`
	// OlderThan is the period: a number and d, w, m or y ("10y", "90d").
	OlderThan string `toml:"older_than"`
	// By is the clock: "study_date" (default) or "received".
	By string `toml:"by"`
	// Source limits the rule to studies every instance of which came
	// from one of these calling AE titles (peer names).
	Source []string `toml:"source"`
	// Modality limits it to studies every series of which has one of
	// these modalities.
	Modality []string `toml:"modality"`
}

// Retention defaults.
const (
	DefaultRetentionInterval     = 24 * time.Hour
	DefaultRetentionMaxDeletions = 1000
	DefaultRetentionMaxPercent   = 10
)

// RetentionRules checks the rules and returns them as the archive applies
// them.
func (r *Retention) RetentionRules() ([]archive.RetentionRule, error) {
	out := make([]archive.RetentionRule, 0, len(r.Rules))
	seen := map[string]bool{}
	for i, c := range r.Rules {
		name := strings.TrimSpace(c.Name)
		where := fmt.Sprintf("retention rule %d", i+1)
		if name == "" {
			return nil, fmt.Errorf("%s: a rule needs a name (the audit trail names it as the reason of each deletion)", where)
		}
		where = fmt.Sprintf("retention rule %q", name)
		if seen[name] {
			return nil, fmt.Errorf("%s: two rules have that name", where)
		}
		seen[name] = true
		age, err := archive.ParseAge(c.OlderThan)
		if err != nil {
			return nil, fmt.Errorf("%s: older_than: %w", where, err)
		}
		rule := archive.RetentionRule{Name: name, OlderThan: age}
		switch c.By {
		case "", "study_date":
		case "received":
			rule.ByReceived = true
		default:
			return nil, fmt.Errorf("%s: by %q: use study_date or received", where, c.By)
		}
		for _, s := range c.Source {
			if s = strings.TrimSpace(s); s == "" || len(s) > 16 {
				return nil, fmt.Errorf("%s: source %q is no AE title", where, s)
			}
			rule.Sources = append(rule.Sources, s)
		}
		for _, m := range c.Modality {
			if m = strings.ToUpper(strings.TrimSpace(m)); m == "" || len(m) > 16 {
				return nil, fmt.Errorf("%s: modality %q is no modality", where, m)
			}
			rule.Modalities = append(rule.Modalities, m)
		}
		out = append(out, rule)
	}
	return out, nil
}

// RetentionInterval is the time between background passes (0: none).
func (r *Retention) RetentionInterval() (time.Duration, error) {
	switch strings.TrimSpace(r.Interval) {
	case "":
		return DefaultRetentionInterval, nil
	case "0", "off":
		return 0, nil
	}
	d, err := time.ParseDuration(r.Interval)
	if err != nil {
		return 0, fmt.Errorf("retention interval %q: a duration such as 24h, or off", r.Interval)
	}
	if d < time.Minute {
		return 0, fmt.Errorf("retention interval %q: at least 1m (or off)", r.Interval)
	}
	return d, nil
}

// Limits returns max_deletions and max_percent, defaults applied.
func (r *Retention) Limits() (maxDeletions int, maxPercent float64) {
	maxDeletions, maxPercent = r.MaxDeletions, r.MaxPercent
	if maxDeletions == 0 {
		maxDeletions = DefaultRetentionMaxDeletions
	}
	if maxPercent == 0 {
		maxPercent = DefaultRetentionMaxPercent
	}
	return maxDeletions, maxPercent
}

func (r *Retention) validate() error {
	if _, err := r.RetentionRules(); err != nil {
		return err
	}
	if _, err := r.RetentionInterval(); err != nil {
		return err
	}
	if r.MaxDeletions < 0 {
		return errors.New("retention max_deletions must not be negative (0: the default, 1000)")
	}
	if r.MaxPercent < 0 || r.MaxPercent > 100 {
		return errors.New("retention max_percent is a share of the archive from 0 (the default, 10) to 100")
	}
	return nil
}
