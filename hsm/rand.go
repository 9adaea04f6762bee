package hsm

import (
	"context"
	"fmt"
	"io"
)

// Random returns a reader of the token's random number generator
// (C_GenerateRandom), for serial numbers and other values that should come
// from the certified module.
func (m *Module) Random() io.Reader { return randomReader{m} }

type randomReader struct{ m *Module }

// maxRandomRead bounds one C_GenerateRandom call; some modules cap it.
const maxRandomRead = 1024

func (r randomReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		want := min(len(p)-n, maxRandomRead)
		err := r.m.do(context.Background(), func(s *session) error {
			b, err := r.m.lib.ctx.GenerateRandom(s.h, want)
			if err != nil {
				return fmt.Errorf("C_GenerateRandom: %w", err)
			}
			if len(b) != want {
				return fmt.Errorf("C_GenerateRandom returned %d bytes, want %d", len(b), want)
			}
			copy(p[n:], b)
			return nil
		})
		if err != nil {
			return n, err
		}
		n += want
	}
	return n, nil
}
