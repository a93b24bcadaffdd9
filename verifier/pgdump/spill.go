package pgdump

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"
	"sync/atomic"
)

// ErrSpill wraps a failure of the local spill file while reading: the
// archive was not judged, so it is neither truncated nor corrupt.
var ErrSpill = errors.New("spill file")

// DefaultSpillMax is what all spill files hold at once, together, unless
// SetSpillMax says otherwise.
const DefaultSpillMax = 1 << 30

// sharedSpill holds the slots, one per segment, of the budget reads with
// Options.SpillMax 0 share; nil: they do not spill.
var sharedSpill atomic.Pointer[chan struct{}]

func init() { SetSpillMax(DefaultSpillMax) }

// SetSpillMax sets the bytes all spill files of reads with Options.SpillMax
// 0 may hold at once, together; less than one segment (256 KiB), 0
// included, turns spilling off. Reads under way keep the budget they began
// with.
func SetSpillMax(n int64) {
	if n < segSize {
		sharedSpill.Store(nil)
		return
	}
	ch := make(chan struct{}, n/segSize)
	sharedSpill.Store(&ch)
}

// spill is a temporary file where segments wait for a busy worker. It is
// unlinked as soon as it is made, so nothing is left behind by a crash, and
// each segment's place is handed back to the file system once read (a hole
// punched, where the system can), so the disk it holds stays within max.
type spill struct {
	dir    string
	tokens chan struct{} // one per segment on disk

	mu     sync.Mutex
	f      *os.File
	end    int64   // the end of the slots used so far
	holes  []int64 // slots freed below end, used again first
	live   int     // segments written and not yet freed
	broken bool    // the file could not be made or written: spill no more
	bytes  int64   // written in all
}

// newSpill returns nil when dir is "" (no spilling). limit 0 takes slots
// from the budget all reads share.
func newSpill(dir string, limit int64) *spill {
	if dir == "" {
		return nil
	}
	if limit <= 0 {
		ch := sharedSpill.Load()
		if ch == nil {
			return nil
		}
		return &spill{dir: dir, tokens: *ch}
	}
	return &spill{dir: dir, tokens: make(chan struct{}, max(1, limit/segSize))}
}

func (s *spill) usable() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.broken
}

// write stores b in the file and returns its offset and checksum. Only the
// archive's goroutine writes; each segment takes a whole segSize slot, a
// freed one first, so the file never outgrows the slots taken at once, even
// where holes cannot be punched.
func (s *spill) write(b []byte) (int64, uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, ".archive-spill-*")
		if err != nil {
			s.broken = true
			return 0, 0, err
		}
		_ = os.Remove(f.Name())
		s.f = f
	}
	if s.live == 0 && s.end > 0 {
		// Everything written was read: start again from the beginning.
		if err := s.f.Truncate(0); err == nil {
			s.end, s.holes = 0, s.holes[:0]
		}
	}
	off := s.end
	if n := len(s.holes); n > 0 {
		off = s.holes[n-1]
	}
	if _, err := s.f.WriteAt(b, off); err != nil {
		s.broken = true
		return 0, 0, err
	}
	if n := len(s.holes); n > 0 {
		s.holes = s.holes[:n-1]
	} else {
		s.end += segSize
	}
	s.live++
	s.bytes += int64(len(b))
	return off, crc32.Checksum(b, castagnoli), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// read fills b from the slot at off, whose checksum was sum: a disk that
// returns other bytes is the spill file's fault, never the archive's.
func (s *spill) read(b []byte, off int64, sum uint32) error {
	s.mu.Lock()
	f := s.f
	s.mu.Unlock()
	if _, err := f.ReadAt(b, off); err != nil {
		return fmt.Errorf("%w: read back %d bytes at %d: %v", ErrSpill, len(b), off, err)
	}
	if crc32.Checksum(b, castagnoli) != sum {
		return fmt.Errorf("%w: the %d bytes read back at %d are not those written", ErrSpill, len(b), off)
	}
	return nil
}

// free hands the slot at off back: to the file system, and to the budget.
func (s *spill) free(off int64) {
	s.mu.Lock()
	punchHole(s.f, off, segSize)
	s.holes = append(s.holes, off)
	s.live--
	s.mu.Unlock()
	<-s.tokens
}

// written is how many bytes went through the file.
func (s *spill) written() int64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// close closes the file, once every worker and the archive's goroutine are
// done, and gives back the slots of segments never read (a read that
// stopped early), so the shared budget never shrinks.
func (s *spill) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for ; s.live > 0; s.live-- {
		<-s.tokens
	}
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
}
