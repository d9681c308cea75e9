package dicomweb

import "net/http"

func (s *Server) store(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
