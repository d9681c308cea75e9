package dicomweb

import "net/http"

func (s *Server) bulkdata(w http.ResponseWriter, r *http.Request) { s.notYet(w, r) }
