package server

import "github.com/ward-pacs/ward/internal/datadir"

// dataLayout is the data directory as the permission checks see it: the
// object trees are the default blobs' (backends.go).
var dataLayout = datadir.Layout{Trees: objectTrees}

// checkDataDir checks the data directory (and an audit log directory
// kept elsewhere), tightening them first when asked.
func (s *Server) checkDataDir() error {
	c := s.Config
	extra := datadir.Outside(c.DataDir, c.AuditDir())
	if s.FixPermissions {
		n, err := dataLayout.Fix(c.DataDir, extra)
		if err != nil {
			return err
		}
		if n > 0 {
			s.Logger.Warn("data directory closed to other local users", "dir", c.DataDir, "changed", n)
		}
	}
	if dirs, err := dataLayout.CloseOpenDirs(c.DataDir, extra); err != nil {
		return err
	} else if len(dirs) > 0 {
		s.Logger.Warn("data directory closed to other local users: its directories were open, no file in it was", "dirs", dirs)
	}
	if err := dataLayout.Check(c.DataDir, extra); err != nil {
		return err
	}
	for _, k := range []struct{ setting, path string }{{"[dicom] tls_key", c.DICOM.TLSKey}, {"[audit] syslog_key", c.Audit.SyslogKey}} {
		if err := datadir.CheckKeyFile(k.setting, k.path); err != nil {
			return err
		}
	}
	return nil
}
