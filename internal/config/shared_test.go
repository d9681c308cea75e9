package config

import "testing"

// TestDeidentifyWithoutSecret: the peers and users of the shared index
// with a de-identification profile are named when the node's file names
// no secret (ward serve warns of them), and not when it does.
func TestDeidentifyWithoutSecret(t *testing.T) {
	c := Default()
	sh := &Shared{
		Peers: []Peer{{AETitle: "RESEARCH", Host: "127.0.0.1", Port: 104, Allow: []string{"move-destination"}, Deidentify: "basic"},
			{AETitle: "CLINIC", Host: "127.0.0.1", Port: 105, Allow: []string{"move-destination"}}},
	}
	eff, err := c.WithShared(sh)
	if err != nil {
		t.Fatal(err)
	}
	if got := eff.DeidentifyWithoutSecret(); len(got) != 1 || got[0] != "peer RESEARCH" {
		t.Errorf("without a secret: %v, want [peer RESEARCH]", got)
	}
	eff.Deidentify.SecretFile = "/some/secret"
	if got := eff.DeidentifyWithoutSecret(); len(got) != 0 {
		t.Errorf("with a secret: %v", got)
	}
}
