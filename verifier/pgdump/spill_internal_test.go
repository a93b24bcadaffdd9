package pgdump

import (
	"bytes"
	"errors"
	"testing"
)

// TestSpillSlots: a spill file that always holds one segment while the
// next is written stays two slots long (freed slots are used again), and a
// segment that reads back other bytes than were written is a spill file
// error, not corrupt data.
func TestSpillSlots(t *testing.T) {
	s := newSpill(t.TempDir(), 4*segSize)
	defer s.close()
	seg := bytes.Repeat([]byte{7}, segSize)
	type slot struct {
		off int64
		sum uint32
	}
	var prev *slot
	for i := 0; i < 100; i++ {
		s.tokens <- struct{}{}
		off, sum, err := s.write(seg)
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			s.free(prev.off)
		}
		prev = &slot{off, sum}
	}
	fi, err := s.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 2*segSize {
		t.Errorf("the spill file is %d bytes after 100 segments, at most 2 at a time", fi.Size())
	}
	buf := make([]byte, segSize)
	if err := s.read(buf, prev.off, prev.sum); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.WriteAt([]byte{8}, prev.off+100); err != nil {
		t.Fatal(err)
	}
	err = s.read(buf, prev.off, prev.sum)
	var e *Error
	if !errors.Is(err, ErrSpill) || errors.As(err, &e) {
		t.Errorf("a changed segment read back: %v, want an ErrSpill that is no archive error", err)
	}
}
