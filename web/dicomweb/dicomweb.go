// Package dicomweb serves DICOMweb (PS3.18) at /dicom-web: QIDO-RS
// (qido.go), WADO-RS (wado.go, metadata.go, frames.go, rendered.go),
// STOW-RS (stow.go) and WADO-URI at /wado (wadouri.go). Each handler
// turns its request into calls on the archive's service, with the
// principal the web front end authenticated in the context, and maps the
// service's errors through web.Error: it decides nothing about who may do
// what (the policy wrapping the service does) and records nothing (the
// audit trail wrapping it does).
package dicomweb

import (
	"net/http"

	"github.com/ward-pacs/ward/archive"
	"github.com/ward-pacs/ward/web"
)

// Root is where DICOMweb is served.
const Root = "/dicom-web"

// Options configure the DICOMweb handlers.
type Options struct {
	// MaxResults caps the matches of one QIDO-RS request (a client's
	// limit may ask for fewer; a Warning header says when it cut).
	MaxResults int
	// Storable reports whether STOW-RS stores objects of a SOP class (the
	// storage SOP classes and the configured private ones); nil:
	// dicom.IsStorageSOPClass.
	Storable func(sopClassUID string) bool
}

// Server is the DICOMweb front end on one web.Handler.
type Server struct {
	web  *web.Handler
	svc  archive.Service
	opts Options
}

// Register mounts DICOMweb on h, serving from svc (the archive's service
// as wrapped by the policy and the audit trail).
func Register(h *web.Handler, svc archive.Service, o Options) *Server {
	s := &Server{web: h, svc: svc, opts: o}
	routes := []struct {
		pattern string
		fn      http.HandlerFunc
	}{
		// QIDO-RS (PS3.18 10.6)
		{"GET " + Root + "/studies", s.searchStudies},
		{"GET " + Root + "/series", s.searchSeries},
		{"GET " + Root + "/studies/{study}/series", s.searchSeries},
		{"GET " + Root + "/instances", s.searchInstances},
		{"GET " + Root + "/studies/{study}/instances", s.searchInstances},
		{"GET " + Root + "/studies/{study}/series/{series}/instances", s.searchInstances},
		// WADO-RS (PS3.18 10.4)
		{"GET " + Root + "/studies/{study}", s.retrieve},
		{"GET " + Root + "/studies/{study}/series/{series}", s.retrieve},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}", s.retrieve},
		{"GET " + Root + "/studies/{study}/metadata", s.metadata},
		{"GET " + Root + "/studies/{study}/series/{series}/metadata", s.metadata},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}/metadata", s.metadata},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", s.frames},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path...}", s.bulkdata},
		{"GET " + Root + "/studies/{study}/rendered", s.rendered},
		{"GET " + Root + "/studies/{study}/series/{series}/rendered", s.rendered},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}/rendered", s.rendered},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered", s.rendered},
		{"GET " + Root + "/studies/{study}/thumbnail", s.thumbnail},
		{"GET " + Root + "/studies/{study}/series/{series}/thumbnail", s.thumbnail},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}/thumbnail", s.thumbnail},
		{"GET " + Root + "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail", s.thumbnail},
		// STOW-RS (PS3.18 10.5)
		{"POST " + Root + "/studies", s.store},
		{"POST " + Root + "/studies/{study}", s.store},
		// WADO-URI (PS3.18 9)
		{"GET /wado", s.wadoURI},
	}
	for _, rt := range routes {
		h.Handle(rt.pattern, rt.fn)
	}
	return s
}
