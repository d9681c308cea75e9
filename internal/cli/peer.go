package cli

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/ward-pacs/ward/internal/config"
)

// configFile is the file `ward peer` edits: --config FILE, or
// DATA/ward.toml (DATA is --data, default ./ward-data), as `ward serve`
// reads it.
func configFile(configPath, dataDir string) string {
	if configPath != "" {
		return configPath
	}
	if dataDir == "" {
		dataDir = config.DefaultDataDir
	}
	return filepath.Join(dataDir, config.ConfigFileName)
}

func runPeer(e *env, args []string) error {
	usage := func() error {
		fmt.Fprintln(e.stderr, `Usage:
  ward peer add TITLE [--host HOST --port PORT] [--allow echo,store,find,move,get] [--config FILE | --data DIR]
  ward peer list [--config FILE | --data DIR]
  ward peer remove TITLE [--config FILE | --data DIR]

Peers are stored as [[peers]] tables in Ward's configuration file; a running
'ward serve' reloads them on SIGHUP. HOST and PORT say where Ward reaches the
peer (a C-MOVE destination needs them). Allow lists are recorded; enforcing
them per association comes with the security work.`)
		return errUsage
	}
	if len(args) < 1 {
		return usage()
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet(e, "peer "+sub, "[flags]")
	configPath := fs.String("config", "", "configuration file (TOML; default: DATA/ward.toml)")
	dataDir := fs.String("data", "", "data directory (default "+config.DefaultDataDir+")")
	var host, allow *string
	var port *int
	if sub == "add" {
		host = fs.String("host", "", "host (IP address or name) where Ward reaches the peer")
		port = fs.Int("port", 0, "port where Ward reaches the peer")
		allow = fs.String("allow", "", "services the peer may use, comma-separated: "+strings.Join(config.Services, ","))
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	path := configFile(*configPath, *dataDir)
	switch sub {
	case "add":
		if len(pos) != 1 {
			return usage()
		}
		p := config.Peer{AETitle: pos[0], Host: *host, Port: *port}
		for _, s := range strings.Split(*allow, ",") {
			if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
				p.Allow = append(p.Allow, s)
			}
		}
		if err := p.Validate(); err != nil {
			return err
		}
		verb := "added"
		err := config.EditPeers(path, func(peers []config.Peer) ([]config.Peer, error) {
			for i := range peers {
				if peers[i].AETitle == p.AETitle {
					peers[i] = p
					verb = "updated"
					return peers, nil
				}
			}
			return append(peers, p), nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "peer %s %s in %s (a running ward serve picks it up on SIGHUP)\n", p.AETitle, verb, path)
		return nil
	case "remove":
		if len(pos) != 1 {
			return usage()
		}
		err := config.EditPeers(path, func(peers []config.Peer) ([]config.Peer, error) {
			for i := range peers {
				if peers[i].AETitle == pos[0] {
					return append(peers[:i], peers[i+1:]...), nil
				}
			}
			return nil, fmt.Errorf("no peer %q in %s", pos[0], path)
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "peer %s removed from %s\n", pos[0], path)
		return nil
	case "list":
		if len(pos) != 0 {
			return usage()
		}
		c, err := config.Load(path, *configPath == "")
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AET\tHOST\tPORT\tALLOW")
		for _, p := range c.Peers {
			port := ""
			if p.Port != 0 {
				port = fmt.Sprint(p.Port)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.AETitle, p.Host, port, strings.Join(p.Allow, ","))
		}
		return tw.Flush()
	case "-h", "--help", "help":
		usage()
		return flag.ErrHelp
	}
	return usage()
}
