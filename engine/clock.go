package engine

import (
	"sync"
	"time"
)

// clock hands out the times stamped on certificates (notBefore) and CRLs
// (thisUpdate). Stamps never go backwards (SPEC §6.2a): if the system clock
// reads earlier than the last stamp — stepped back by NTP, an operator or an
// attacker — signing is refused rather than backdated.
type clock struct {
	mu   sync.Mutex
	now  func() time.Time
	last time.Time
}

func (c *clock) stamp() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now().UTC().Truncate(time.Second) // certificates and CRLs carry seconds
	if t.Before(c.last) {
		return time.Time{}, errorf(CodeClockBackwards,
			"system clock reads %s, before the last signing time %s: refusing to sign backdated objects",
			t.Format(time.RFC3339), c.last.Format(time.RFC3339))
	}
	c.last = t
	return t, nil
}
