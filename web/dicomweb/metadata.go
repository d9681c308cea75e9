package dicomweb

import "net/http"

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
