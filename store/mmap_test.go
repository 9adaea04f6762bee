package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// goroutinesIn reports whether a goroutine is now inside every one of
// frames (function names as runtime.Stack prints them).
func goroutinesIn(frames ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		in := true
		for _, f := range frames {
			in = in && strings.Contains(g, f)
		}
		if in {
			return true
		}
	}
	return false
}

// awaitGoroutineIn waits until a goroutine is inside frames.
func awaitGoroutineIn(t *testing.T, what string, frames ...string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !goroutinesIn(frames...); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine %s after 20s", what)
		}
	}
}

// TestOpenReaderHoldsBackGrowthOnlyWithoutReservedMap shows what the
// store's memory map is for. With a read transaction open, writes that
// grow the file past its map wait in bbolt's remap until the reader ends,
// and readers that begin meanwhile wait behind them; with the default map
// the same writes grow the file and complete while the reader stays open.
func TestOpenReaderHoldsBackGrowthOnlyWithoutReservedMap(t *testing.T) {
	const writes, detail = 64, 64 << 10 // 4 MiB: past several doublings of a small map
	for _, tt := range []struct {
		name  string
		opts  Options
		waits bool
	}{
		{"no map reserved", Options{}, true},
		{"default map", Options{InitialMmapSize: DefaultInitialMmapSize}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signerd.db")
			s, err := OpenWith(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			reading, release := make(chan struct{}), make(chan struct{})
			readerDone := make(chan error, 1)
			go func() {
				readerDone <- s.View(func(*Tx) error { close(reading); <-release; return nil })
			}()
			<-reading
			released := false
			releaseReader := func() {
				if !released {
					released = true
					close(release)
					<-readerDone
				}
			}
			defer releaseReader()

			wrote := make(chan error, 1)
			go func() {
				for i := range writes {
					if err := s.Update(func(tx *Tx) error {
						_, err := tx.Append(Event{Actor: System, Action: "test.write", Object: fmt.Sprint(i),
							Outcome: OutcomeOK, Detail: strings.Repeat("x", detail)})
						return err
					}); err != nil {
						wrote <- err
						return
					}
				}
				wrote <- nil
			}()
			if tt.waits {
				awaitGoroutineIn(t, "waiting to remap", "bbolt.(*DB).mmap(", "(*RWMutex).Lock")
				// A reader now waits behind the write.
				go s.View(func(*Tx) error { return nil })
				awaitGoroutineIn(t, "reading behind the remap", "bbolt.(*DB).beginTx(", "(*RWMutex).RLock")
				releaseReader()
			}
			select {
			case err := <-wrote:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				buf := make([]byte, 1<<20)
				t.Fatalf("%d writes not done after 30s with a reader open:\n%s", writes, buf[:runtime.Stack(buf, true)])
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() < writes*detail {
				t.Fatalf("the file is %d bytes after %d writes of %d", fi.Size(), writes, detail)
			}
		})
	}
}
