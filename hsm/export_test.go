package hsm

import (
	"context"

	"github.com/miekg/pkcs11"
)

// PrivateAttribute reads one attribute of k's private key as the module
// answers it, for tests that check what the module refuses to reveal.
func (k *Key) PrivateAttribute(ctx context.Context, attr uint) ([]byte, error) {
	var v []byte
	err := k.m.do(ctx, func(s *session) error {
		h, err := k.privateHandle(s)
		if err != nil {
			return err
		}
		got, err := k.m.lib.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(attr, nil)})
		if err == nil {
			v = got[0].Value
		}
		return err
	})
	return v, err
}

// PeakSessions is the most sessions the pool has had in use at once.
func (m *Module) PeakSessions() int {
	m.pool.mu.Lock()
	defer m.pool.mu.Unlock()
	return m.pool.peak
}
