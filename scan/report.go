package scan

import (
	"encoding/json"
	"fmt"
	"github.com/ward-pacs/ward/internal/termsafe"
	"html/template"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Formats are the report renderers by name.
var Formats = []string{"text", "json", "sarif", "html"}

// Write renders the report in format.
func (r *Report) Write(w io.Writer, format string) error {
	switch format {
	case "", "text":
		return r.WriteText(w)
	case "json":
		return r.WriteJSON(w)
	case "sarif":
		return r.WriteSARIF(w)
	case "html":
		return r.WriteHTML(w)
	}
	return fmt.Errorf("scan: format %q: use %s", format, strings.Join(Formats, ", "))
}

// WriteJSON writes the stable JSON report (schema ward.scan/v1).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the terminal summary.
func (r *Report) WriteText(w io.Writer) error {
	state := "complete"
	if !r.Complete {
		state = "INCOMPLETE (deadline or interrupt)"
	}
	fmt.Fprintf(w, "ward scan: %d addresses, %d endpoints probed of %d, %d open, %d services, %d findings; %s\n",
		r.Stats.Addresses, r.Stats.Probed, r.Stats.Endpoints, r.Stats.Open, len(r.Services), len(r.Findings), state)
	c := r.Exposure.Findings
	fmt.Fprintf(w, "severity: critical %d, high %d, medium %d, low %d, info %d; studies answered to C-FIND: %d; Orthanc patients: %d\n\n",
		c.Critical, c.High, c.Medium, c.Low, c.Info, r.Exposure.Studies, r.Exposure.Patients)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(r.Services) > 0 {
		fmt.Fprintln(tw, "SERVICE\tPROTOCOL\tPRODUCT\tNOTES")
		for _, s := range r.Services {
			prod := strings.TrimSpace(s.Product + " " + s.Version)
			if s.ImplementationVersionName != "" {
				prod = strings.TrimSpace(prod + " (" + s.ImplementationVersionName + ")")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", termsafe.Quote(hostPort(s.Host, s.Port)), s.Protocol, termsafe.Quote(prod), termsafe.Text(strings.Join(s.Notes, "; "), ""))
		}
		fmt.Fprintln(tw)
	}
	if len(r.Findings) > 0 {
		fmt.Fprintln(tw, "SEVERITY\tFINDING\tSERVICE\tEVIDENCE")
		for _, f := range r.Findings {
			ev := f.Evidence.Received
			if f.Evidence.Count != nil {
				ev = fmt.Sprintf("count %d", *f.Evidence.Count)
				if f.Evidence.CapReached {
					ev += " (cap reached)"
				}
			}
			if len(f.CVEs) > 0 {
				ev = strings.Join(f.CVEs, " ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Severity, f.ID, termsafe.Quote(hostPort(f.Host, f.Port)), termsafe.Quote(truncate(ev, 100)))
		}
	}
	return tw.Flush()
}

func hostPort(h string, p int) string {
	if strings.Contains(h, ":") {
		return fmt.Sprintf("[%s]:%d", h, p)
	}
	return fmt.Sprintf("%s:%d", h, p)
}

// SARIF 2.1.0, the minimal valid subset.
type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	InformationURI string      `json:"informationUri,omitempty"`
	Rules          []sarifRule `json:"rules"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifRule struct {
	ID                   string            `json:"id"`
	ShortDescription     sarifText         `json:"shortDescription"`
	Help                 sarifText         `json:"help"`
	DefaultConfiguration map[string]string `json:"defaultConfiguration"`
	Properties           map[string]any    `json:"properties,omitempty"`
}

type sarifResult struct {
	RuleID     string          `json:"ruleId"`
	RuleIndex  int             `json:"ruleIndex"`
	Level      string          `json:"level"`
	Message    sarifText       `json:"message"`
	Locations  []sarifLocation `json:"locations"`
	Properties map[string]any  `json:"properties,omitempty"`
}

type sarifLocation struct {
	PhysicalLocation sarifPhysical `json:"physicalLocation"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifact `json:"artifactLocation"`
}

type sarifArtifact struct {
	URI string `json:"uri"`
}

func sarifLevel(s Severity) string {
	switch s {
	case Critical, High:
		return "error"
	case Medium:
		return "warning"
	}
	return "note"
}

// securitySeverity maps to the CVSS-like score GitHub code scanning reads.
func securitySeverity(s Severity) string {
	return [...]string{"0.0", "3.0", "5.0", "8.0", "9.5"}[s]
}

// WriteSARIF writes a SARIF 2.1.0 log: one rule per finding ID, one result
// per finding, located at dicom://HOST:PORT (or http(s)://).
func (r *Report) WriteSARIF(w io.Writer) error {
	idx := map[string]int{}
	var rules []sarifRule
	for i, ru := range Rules {
		idx[ru.ID] = i
		rules = append(rules, sarifRule{ID: ru.ID, ShortDescription: sarifText{ru.Title}, Help: sarifText{ru.Fix},
			DefaultConfiguration: map[string]string{"level": sarifLevel(ru.Severity)},
			Properties:           map[string]any{"security-severity": securitySeverity(ru.Severity), "tags": []string{"security", "dicom"}}})
	}
	scheme := map[string]string{}
	for _, s := range r.Services {
		scheme[hostPort(s.Host, s.Port)] = s.Protocol
	}
	results := []sarifResult{}
	for _, f := range r.Findings {
		hp := hostPort(f.Host, f.Port)
		sch := scheme[hp]
		if sch == "" || sch == "unknown" {
			sch = "tcp"
		}
		props := map[string]any{"severity": f.Severity.String(), "sent": f.Evidence.Sent, "received": f.Evidence.Received}
		if f.Evidence.Count != nil {
			props["count"] = *f.Evidence.Count
			props["cap_reached"] = f.Evidence.CapReached
		}
		if len(f.CVEs) > 0 {
			props["cves"] = f.CVEs
		}
		results = append(results, sarifResult{RuleID: f.ID, RuleIndex: idx[f.ID], Level: sarifLevel(f.Severity),
			Message:   sarifText{f.Title + " Evidence: " + f.Evidence.Received + ". Fix: " + f.Fix},
			Locations: []sarifLocation{{PhysicalLocation: sarifPhysical{ArtifactLocation: sarifArtifact{URI: sch + "://" + hp}}}}, Properties: props})
	}
	log := sarifLog{Schema: "https://json.schemastore.org/sarif-2.1.0.json", Version: "2.1.0",
		Runs: []sarifRun{{Tool: sarifTool{Driver: sarifDriver{Name: "ward-scan", InformationURI: "https://github.com/ward-pacs/ward", Rules: rules}}, Results: results}}}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(log)
}

// bar is one bar of an inline SVG chart.
type bar struct {
	Label       string
	Value       int
	Y, W, TextX int
	Color       string
}

type chart struct {
	Title  string
	Height int
	Bars   []bar
}

var severityColors = [...]string{"#6b7280", "#2563eb", "#d97706", "#dc2626", "#7f1d1d"}

func makeChart(title string, labels []string, values []int, colors []string) chart {
	maxV := 1
	for _, v := range values {
		maxV = max(maxV, v)
	}
	c := chart{Title: title, Height: 24*len(values) + 8}
	for i, v := range values {
		w := v * 360 / maxV
		c.Bars = append(c.Bars, bar{Label: labels[i], Value: v, Y: 4 + 24*i, W: w, TextX: 170 + w, Color: colors[i%len(colors)]})
	}
	return c
}

var htmlTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Ward scan report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#111}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}th{background:#f3f4f6}
.critical{color:#7f1d1d;font-weight:bold}.high{color:#dc2626;font-weight:bold}.medium{color:#d97706}.low{color:#2563eb}.info{color:#6b7280}
code{font-size:13px}
</style></head><body>
<h1>Ward scan report</h1>
<p>{{.R.Started.Format "2006-01-02 15:04:05 MST"}} to {{.R.Finished.Format "15:04:05 MST"}} &middot; {{.R.Stats.Addresses}} addresses, {{.R.Stats.Probed}} of {{.R.Stats.Endpoints}} endpoints probed, {{.R.Stats.Open}} open &middot; {{if .R.Complete}}complete{{else}}<strong>incomplete</strong> (deadline or interrupt){{end}}</p>
<p>Studies answered to an unauthenticated C-FIND: <strong>{{.R.Exposure.Studies}}</strong>; patients listed by open Orthanc REST APIs: <strong>{{.R.Exposure.Patients}}</strong>. Counts only: no identifier was kept.</p>
{{range .Charts}}<h2>{{.Title}}</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="620" height="{{.Height}}" role="img" aria-label="{{.Title}}">
{{range .Bars}}<text x="0" y="{{.Y}}" dy="14" font-size="13">{{.Label}}</text><rect x="165" y="{{.Y}}" width="{{.W}}" height="18" fill="{{.Color}}"/><text x="{{.TextX}}" y="{{.Y}}" dx="4" dy="14" font-size="13">{{.Value}}</text>
{{end}}</svg>
{{end}}
<h2>Findings</h2>
{{if .R.Findings}}<table><tr><th>Severity</th><th>ID</th><th>Service</th><th>Finding</th><th>Evidence</th><th>Fix</th></tr>
{{range .R.Findings}}<tr><td class="{{.Severity}}">{{.Severity}}</td><td><code>{{.ID}}</code></td><td>{{.Host}}:{{.Port}}</td><td>{{.Title}}</td><td>Sent: {{.Evidence.Sent}}<br>Received: {{.Evidence.Received}}{{if .CVEs}}<br>{{range .CVEs}}{{.}} {{end}}{{end}}</td><td>{{.Fix}}</td></tr>
{{end}}</table>{{else}}<p>No findings.</p>{{end}}
<h2>Services</h2>
{{if .R.Services}}<table><tr><th>Host</th><th>Port</th><th>Protocol</th><th>Product</th><th>Implementation</th><th>Notes</th></tr>
{{range .R.Services}}<tr><td>{{.Host}}</td><td>{{.Port}}</td><td>{{.Protocol}}</td><td>{{.Product}} {{.Version}}</td><td>{{.ImplementationClassUID}} {{.ImplementationVersionName}}</td><td>{{range .Notes}}{{.}}<br>{{end}}</td></tr>
{{end}}</table>{{else}}<p>No service answered.</p>{{end}}
<h2>Scope</h2><p>Targets: {{range .R.Scope.Targets}}<code>{{.}}</code> {{end}}; excluded: {{range .R.Scope.Exclude}}<code>{{.}}</code> {{end}}; ports: {{range .R.Scope.Ports}}{{.}} {{end}}</p>
</body></html>
`))

// WriteHTML writes a self-contained report with inline SVG charts of
// findings by severity and exposure by host.
func (r *Report) WriteHTML(w io.Writer) error {
	var labels []string
	var values []int
	for s := Critical; s >= Info; s-- {
		labels = append(labels, s.String())
		values = append(values, r.Exposure.Findings.Get(s))
	}
	cols := []string{severityColors[4], severityColors[3], severityColors[2], severityColors[1], severityColors[0]}
	charts := []chart{makeChart("Findings by severity", labels, values, cols)}
	hosts := append([]HostExposure(nil), r.Exposure.Hosts...)
	score := func(h HostExposure) int {
		return h.Findings.Critical*1000 + h.Findings.High*100 + h.Findings.Medium*10 + h.Findings.Low
	}
	sort.SliceStable(hosts, func(i, j int) bool { return score(hosts[i]) > score(hosts[j]) })
	if len(hosts) > 20 {
		hosts = hosts[:20]
	}
	if len(hosts) > 0 {
		labels, values = nil, nil
		var hc []string
		for _, h := range hosts {
			labels = append(labels, truncate(h.Host, 22))
			values = append(values, h.Findings.Critical+h.Findings.High+h.Findings.Medium+h.Findings.Low)
			c := severityColors[0]
			for s := Critical; s > Info; s-- {
				if h.Findings.Get(s) > 0 {
					c = severityColors[s]
					break
				}
			}
			hc = append(hc, c)
		}
		charts = append(charts, makeChart("Exposure by host (findings above info; colour = worst)", labels, values, hc))
	}
	return htmlTmpl.Execute(w, struct {
		R      *Report
		Charts []chart
	}{r, charts})
}
