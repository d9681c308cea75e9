package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ward-pacs/ward/store/encblob"
)

// Severity ranks a risky setting.
type Severity int

// Severities, least to most severe.
const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

func (s Severity) String() string {
	return [...]string{"info", "low", "medium", "high", "critical"}[s]
}

// Finding is one risky setting: what it is, why it matters and the fix.
// Refuse marks the settings `ward serve` will not start with (those that
// would recreate the exposure SECURITY.md describes).
type Finding struct {
	Severity Severity
	Setting  string
	Problem  string
	Fix      string
	Refuse   bool
}

func (f Finding) String() string {
	s := fmt.Sprintf("%-8s %s: %s. Fix: %s", strings.ToUpper(f.Severity.String()), f.Setting, f.Problem, f.Fix)
	if f.Refuse {
		s += " (ward serve refuses to start with it)"
	}
	return s
}

// Check lists the configuration's risky settings, most severe first. It
// assumes nothing about Validate having run: settings Validate rejects are
// reported too, as refused.
func (c *Config) Check() []Finding {
	var out []Finding
	add := func(sev Severity, refuse bool, setting, problem, fix string) {
		out = append(out, Finding{Severity: sev, Setting: setting, Problem: problem, Fix: fix, Refuse: refuse})
	}
	plainLoopback := CheckLoopback(c.DICOM.Listen) == nil
	tlsLoopback := c.DICOM.TLSListen == "" || CheckLoopback(c.DICOM.TLSListen) == nil
	exposed := !plainLoopback || !tlsLoopback

	// Listeners.
	if !plainLoopback {
		if len(c.DICOM.PlaintextNetworks) == 0 {
			add(Critical, true, "[dicom] listen = "+c.DICOM.Listen, "plain DIMSE open beyond loopback, to any source", "use tls_listen for the network, or acknowledge plaintext for named networks with plaintext_networks")
		} else {
			add(High, false, "[dicom] plaintext_networks = "+strings.Join(c.DICOM.PlaintextNetworks, ","), "DIMSE in clear text on "+c.DICOM.Listen+": patient data and AE titles readable and spoofable on those networks", "move the peers to the TLS listener (tls_listen) and remove plaintext_networks")
		}
	}
	// The networks are judged together: two /1 halves are every address.
	plain := coverOf(c.DICOM.PlaintextNetworks)
	plainSetting := "[dicom] plaintext_networks = " + strings.Join(c.DICOM.PlaintextNetworks, ",")
	switch {
	case plain.every():
		add(Critical, true, plainSetting, "plain DIMSE acknowledged for every address (together the networks cover "+plain.describe()+")", "name the networks the modalities are on")
	case plain.tooWide():
		add(Critical, true, plainSetting, "plain DIMSE acknowledged for a large part of the internet (together the networks cover "+plain.describe()+")", "name the networks the modalities are on; reach peers beyond the site's own networks over TLS")
	case len(plain.publicNets) > 0:
		add(High, false, "[dicom] plaintext_networks = "+strings.Join(plain.publicNets, ","), "clear-text DICOM acknowledged for public addresses (not private, loopback, link-local or unique local): patient data and AE titles cross networks the site does not control", "reach those peers over TLS (tls_listen) and keep plaintext_networks to private networks")
	}
	if c.DICOM.LoopbackAnyAE {
		if exposed {
			add(Critical, true, "[dicom] loopback_any_ae = true", "any calling AE may use every service while a listener is not on loopback", "register the peers (ward peer add) and turn loopback_any_ae off")
		} else {
			add(Medium, false, "[dicom] loopback_any_ae = true", "any program on this machine may read, store and list everything through the plain loopback listener, under any AE title", "register the local tools as peers (ward peer add TITLE --host 127.0.0.1) and turn it off")
		}
	}
	if c.DICOM.TLSListen != "" && (c.DICOM.TLSCert == "" || c.DICOM.TLSKey == "") {
		add(Critical, true, "[dicom] tls_listen = "+c.DICOM.TLSListen, "a TLS listener without a certificate and key", "set tls_cert and tls_key (ward pki init makes them)")
	}
	if !tlsLoopback && c.DICOM.TLSClientCA == "" {
		pinnedAll := len(c.Peers) > 0
		for _, p := range c.Peers {
			if p.CertFingerprint == "" && len(p.Allow) > 0 {
				pinnedAll = false
			}
		}
		if !pinnedAll {
			add(Medium, false, "[dicom] tls_client_ca", "TLS clients are not authenticated by certificate: peers are known by AE title and source address only", "set tls_client_ca (ward pki init) or pin each peer's certificate (ward peer add --cert-fingerprint)")
		}
	}
	if !tlsLoopback && c.DICOM.TLSClientCA != "" && c.DICOM.TLSCRL == "" {
		add(Low, false, "[dicom] tls_crl", "no certificate revocation list: a client certificate of the CA that leaves the site's control (a stolen laptop, a modality sent for repair) is accepted until it expires", "set tls_crl to the CA's revocation list (ward pki init makes one, ward pki revoke PEER adds to it)")
	}

	if !c.Web.Off() && CheckLoopback(c.Web.Listen) != nil {
		if cert, key := c.WebTLS(); cert == "" || key == "" {
			add(Critical, true, "[web] listen = "+c.Web.Listen, "plain HTTP open beyond loopback: DICOMweb requests, tokens and images readable on the network", "set [web] tls_cert and tls_key (or [dicom]'s), or listen on loopback behind a TLS proxy")
		}
	}
	c.checkMetrics(add)
	c.checkProxyFrom(add)
	if len(c.Web.AllowOrigins) > 0 {
		add(Low, false, "[web] allow_origins = "+strings.Join(c.Web.AllowOrigins, ","), "pages from these origins may call DICOMweb with a user's token", "list only origins the site runs")
	}

	// Limits.
	if c.Query.MaxResults < 0 {
		add(High, false, "[query] max_results = "+fmt.Sprint(c.Query.MaxResults), "C-FIND results are not capped: one query can list every patient", "set a cap (default 1000)")
	}
	if c.DICOM.LockoutAfter < 0 {
		add(Medium, false, "[dicom] lockout_after", "no lockout of sources whose associations keep being refused: AE titles and passcodes can be guessed at network speed", "set lockout_after (default 5)")
	}
	if c.DICOM.IdleTimeout.Duration > time.Hour {
		add(Low, false, "[dicom] idle_timeout = "+c.DICOM.IdleTimeout.String(), "idle associations hold their slot for a long time", "use minutes (default 5m)")
	}
	if c.DICOM.MaxAssociationsPerPeer == 0 {
		add(Low, false, "[dicom] max_associations_per_peer = 0", "one peer may take every association slot", "set a per-peer limit (default 16)")
	}

	// Audit.
	if !c.AuditEnabled() {
		add(High, false, "[audit] enabled = false", "associations, refusals, queries and transfers are not recorded", "turn the audit trail on")
	} else if c.Audit.OnFailure == AuditContinue {
		add(Medium, false, "[audit] on_failure = \"continue\"", "patient data is served while the audit trail cannot be written (records are then lost, and counted)", "use on_failure = \"refuse\" (the default)")
	}
	if c.AuditEnabled() && filepath.Dir(filepath.Clean(c.AuditKeyFile())) == filepath.Clean(c.AuditDir()) {
		add(Low, false, "[audit] key_file = "+c.AuditKeyFile(), "the key that signs the audit log is kept in the log's own directory: whoever can rewrite the log can read it", "keep it apart (default DATA/audit.key), best on another volume or machine")
	}
	if c.AuditEnabled() && c.Audit.Syslog == "" && exposed {
		add(Info, false, "[audit] syslog", "the audit trail stays on this machine only", "forward it to a collector by syslog over TLS ([audit] syslog)")
	}

	// Users and identity.
	if err := c.ValidateUsers(); err != nil {
		add(Critical, true, "[[users]] / [identity]", err.Error(), "fix the entry (ward user passwd NAME rewrites a hash)")
	}

	c.checkStorage(add)

	if n, _, err := c.Storage.MinFreeBytes(); err == nil && n == 0 {
		add(Low, false, "[storage] min_free = 0", "no free space is kept in reserve: C-STOREs fill the disk until writes fail, the index's included", "keep a reserve (the default is 1GiB, or 5% of a smaller disk)")
	}

	if e := c.Storage.Encryption; e.KeyFile != "" && e.Key != "" {
		add(High, true, "[storage.encryption] key_file", "a key file and WARD_ENCRYPTION_KEY are both given", "give one of them")
	} else if e.KeyFile != "" {
		if _, err := encblob.ReadKeyFile(e.KeyFile); err != nil {
			add(High, true, "[storage.encryption] key_file", err.Error(), "ward key init FILE makes a key file (mode 0600)")
		}
	} else if e.Key != "" {
		if _, err := encblob.ParseKeys([]byte(e.Key)); err != nil {
			add(High, true, "WARD_ENCRYPTION_KEY", err.Error(), "give a key file's content (ward key init FILE)")
		}
	}

	// Peers.
	for _, p := range c.Peers {
		name := "peer " + p.AETitle
		bound := len(p.Networks) > 0 || p.CertFingerprint != "" || p.Host != ""
		if !bound && len(p.Allow) > 0 {
			add(Low, false, name, "bound to no host, network or certificate: its associations are refused", "ward peer add "+p.AETitle+" --host HOST, --network CIDR or --cert-fingerprint SHA256")
		}
		for _, n := range p.Networks {
			pf, err := netip.ParsePrefix(n)
			if err != nil {
				add(Critical, true, name, fmt.Sprintf("network %q is not a CIDR", n), "give CIDRs such as 10.1.2.0/24")
				continue
			}
			if pf.Bits() > 0 && pf.Addr().Is4() && pf.Bits() < 16 && p.CertFingerprint == "" {
				add(Medium, false, name+" networks = "+n, "its AE title is accepted from a wide network", "narrow the network, or pin its certificate")
			}
		}
		// Judged together, as plaintext_networks: a pinned certificate
		// authenticates the peer wherever it calls from.
		if nets := coverOf(p.Networks); p.CertFingerprint == "" {
			setting := name + " networks = " + strings.Join(p.Networks, ",")
			switch {
			case nets.every():
				add(Critical, true, setting, "its AE title is accepted from any address (together the networks cover "+nets.describe()+"): AE titles are sent in clear and anyone can claim one", "bind it to its subnet or pin its certificate (--cert-fingerprint)")
			case nets.tooWide():
				add(Critical, true, setting, "its AE title is accepted from a large part of the internet (together the networks cover "+nets.describe()+")", "bind it to its subnet or pin its certificate (--cert-fingerprint)")
			case len(nets.publicNets) > 0:
				add(Medium, false, name+" networks = "+strings.Join(nets.publicNets, ","), "its AE title is accepted from public addresses (not private, loopback, link-local or unique local), where anyone on the path can claim it", "pin its certificate (--cert-fingerprint), or bind it to private networks only")
			}
		}
		if len(p.Networks) == 0 && p.CertFingerprint == "" && p.Host != "" {
			if _, err := netip.ParseAddr(p.Host); err != nil {
				add(Low, false, name+" host = "+p.Host, "bound to a host name: whoever controls its DNS answer can call as this peer", "bind it to an address (--network IP/32) or pin its certificate")
			}
		}
		dest := p.Allows(MoveDestination)
		switch {
		case dest && p.Addr() == "":
			add(Low, false, name, "has the move-destination permission but no host and port: C-MOVE to it is refused", "ward peer add "+p.AETitle+" --host HOST --port PORT")
		case !dest && p.Port != 0:
			add(Info, false, name+" port", "has a port but is no C-MOVE destination (no move-destination permission): C-MOVE to it is refused with A801", "add move-destination to its allow list if it should receive images")
		}
		if dest && p.Port != 0 && !p.TLS {
			if a, err := netip.ParseAddr(p.Host); err != nil || !a.IsLoopback() {
				add(Medium, false, name+" host = "+p.Host, "C-MOVE sends it images in clear text", "reach it over TLS (ward peer add "+p.AETitle+" --tls, and [dicom] tls_peer_ca / tls_client_cert)")
			}
		}
		if p.RequireIdentity && !p.RequireTLS && p.CertFingerprint == "" {
			add(Medium, false, name, "sends passcodes or tokens that travel in clear on the plain listener", "require TLS for it (--require-tls)")
		}
		if slices.Contains(p.Allow, "bulk-query") {
			add(Info, false, name, "may list every patient and study (bulk-query)", "grant bulk-query only to systems that need the whole list")
		}
		if p.MaxResults < 0 {
			add(High, false, name+" max_results", "its C-FIND results are not capped", "give it a cap")
		}
	}
	if err := c.Retention.validate(); err != nil {
		add(High, true, "[retention]", err.Error(), "correct the rule (docs/configuration.md, \"Retention\")")
	} else if len(c.Retention.Rules) > 0 {
		_, pct := c.Retention.Limits()
		if pct > 50 {
			add(Medium, false, fmt.Sprintf("[retention] max_percent = %g", pct), "a background pass may delete most of the archive at once", "keep max_percent low and run large clean-ups by hand (ward retention plan, then ward retention run --force)")
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int { return int(b.Severity) - int(a.Severity) })
	return out
}

// Refused returns the findings `ward serve` refuses to start with.
func Refused(fs []Finding) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Refuse {
			out = append(out, f)
		}
	}
	return out
}
