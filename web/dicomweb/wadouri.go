package dicomweb

import "net/http"

func (s *Server) wadoURI(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
