package hsm

import (
	"context"

	"github.com/miekg/pkcs11"
)

// PrivateAttribute reads one attribute of k's private key as the module
// answers it, for tests that check what the module refuses to reveal.
func (k *Key) PrivateAttribute(ctx context.Context, attr uint) ([]byte, error) {
	got, err := k.privateAttributes(ctx, []*pkcs11.Attribute{pkcs11.NewAttribute(attr, nil)})
	if err != nil {
		return nil, err
	}
	return got[0].Value, nil
}

// PeakSessions is the most sessions the pool has had in use at once.
func (m *Module) PeakSessions() int {
	m.pool.mu.Lock()
	defer m.pool.mu.Unlock()
	return m.pool.peak
}
