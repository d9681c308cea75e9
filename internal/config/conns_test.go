package config

import (
	"testing"
	"time"
)

func TestPendingBudget(t *testing.T) {
	tests := []struct {
		name                      string
		d                         DICOM
		total, perSource, reserve int
		firstPDU                  time.Duration
	}{
		{"zero values are the defaults", DICOM{ARTIMTimeout: Duration{30 * time.Second}}, DefaultMaxPending, DefaultMaxPendingPerSource, DefaultPendingPeerReserve, DefaultFirstPDUTimeout},
		{"negative reserve is none", DICOM{MaxPending: 10, MaxPendingPerSource: 2, PendingPeerReserve: -1}, 10, 2, 0, DefaultFirstPDUTimeout},
		{"reserve leaves strangers one place", DICOM{MaxPending: 4, MaxPendingPerSource: 9, PendingPeerReserve: 16}, 4, 4, 3, DefaultFirstPDUTimeout},
		{"first PDU within ARTIM", DICOM{FirstPDUTimeout: Duration{time.Minute}, ARTIMTimeout: Duration{20 * time.Second}}, DefaultMaxPending, DefaultMaxPendingPerSource, DefaultPendingPeerReserve, 20 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, perSource, reserve, firstPDU := tt.d.PendingBudget()
			if total != tt.total || perSource != tt.perSource || reserve != tt.reserve || firstPDU != tt.firstPDU {
				t.Fatalf("got %d %d %d %s, want %d %d %d %s", total, perSource, reserve, firstPDU, tt.total, tt.perSource, tt.reserve, tt.firstPDU)
			}
		})
	}
}

func TestPendingValidation(t *testing.T) {
	for _, edit := range []func(*DICOM){
		func(d *DICOM) { d.MaxPending = -1 },
		func(d *DICOM) { d.MaxPendingPerSource = -1 },
		func(d *DICOM) { d.FirstPDUTimeout.Duration = -time.Second },
	} {
		c := Default()
		edit(&c.DICOM)
		if err := c.Validate(); err == nil {
			t.Errorf("accepted %+v", c.DICOM)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}
