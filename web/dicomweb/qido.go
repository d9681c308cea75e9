package dicomweb

import "net/http"

func (s *Server) searchStudies(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }

func (s *Server) searchSeries(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }

func (s *Server) searchInstances(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
