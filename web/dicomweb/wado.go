package dicomweb

import "net/http"

func (s *Server) retrieve(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
