package config

import (
	"fmt"
	"time"
)

// PendingBudget is the connection budget before admission with the
// defaults applied to zero values: connections not yet admitted in total
// and per source address, the part of the total kept for sources a
// registered peer is bound to, and the deadline for the first PDU.
func (d *DICOM) PendingBudget() (total, perSource, reserve int, firstPDU time.Duration) {
	total, perSource, reserve, firstPDU = d.MaxPending, d.MaxPendingPerSource, d.PendingPeerReserve, d.FirstPDUTimeout.Duration
	if total == 0 {
		total = DefaultMaxPending
	}
	if perSource == 0 {
		perSource = DefaultMaxPendingPerSource
	}
	switch {
	case reserve == 0:
		reserve = DefaultPendingPeerReserve
	case reserve < 0:
		reserve = 0
	}
	// Strangers keep at least one place, peers at least the reserve.
	reserve = min(reserve, total-1)
	perSource = min(perSource, total)
	if firstPDU == 0 {
		firstPDU = DefaultFirstPDUTimeout
	}
	if a := d.ARTIMTimeout.Duration; a > 0 && firstPDU > a {
		firstPDU = a
	}
	return total, perSource, reserve, firstPDU
}

func (d *DICOM) validatePending() error {
	if d.MaxPending < 0 {
		return fmt.Errorf("dicom max_pending must not be negative (0: the default, %d)", DefaultMaxPending)
	}
	if d.MaxPendingPerSource < 0 {
		return fmt.Errorf("dicom max_pending_per_source must not be negative (0: the default, %d)", DefaultMaxPendingPerSource)
	}
	if d.FirstPDUTimeout.Duration < 0 {
		return fmt.Errorf("dicom first_pdu_timeout must not be negative (0: the default, %s)", DefaultFirstPDUTimeout)
	}
	return nil
}
