package dicomweb

import "net/http"

func (s *Server) rendered(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }

func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
