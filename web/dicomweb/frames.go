package dicomweb

import "net/http"

func (s *Server) frames(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
