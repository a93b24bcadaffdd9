package pgdump

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/adler32"
	"io"
	"sync"
	"sync/atomic"
)

// inflater inflates zlib streams (RFC 1950) with the DEFLATE decoder in
// deflate.go, reusing its buffers and tables from one stream to the next.
// The inflated bytes go from its window into the adler32 sum and nowhere
// else.
type inflater struct {
	src      io.Reader
	srcErr   error // the first error src returned, io.EOF included
	in       []byte
	ip, iend int    // unread input is in[ip:iend]
	bits     uint64 // bit buffer: nb bits, the next one lowest
	nb       uint
	win      []byte // output: 32 KiB of history, then new bytes from fl to wp
	wp, fl   int
	total    int64 // bytes flushed into sum
	sum      hash.Hash32
	lit      [litTableSize]uint32
	dist     [distTableSize]uint32
	lens     [286 + 30]uint8
	longest  [1 << litBits]uint8
}

var (
	errHeader     = errors.New("zlib: invalid header")
	errDictionary = errors.New("zlib: preset dictionary")
	errChecksum   = errors.New("zlib: invalid checksum")
)

func newInflater() *inflater {
	return &inflater{in: make([]byte, 64<<10), win: make([]byte, winSize), sum: adler32.New()}
}

// inflate reads one zlib stream from src, which must end where the stream
// ends, and returns how many bytes it inflated to. The adler32 checksum at
// the stream's end is verified. Data after the stream's end is an error:
// pg_dump never writes it, and pg_restore spins forever on it.
func (f *inflater) inflate(src io.Reader) (int64, error) {
	f.src, f.srcErr = src, nil
	defer func() { f.src = nil }()
	f.ip, f.iend, f.bits, f.nb = 0, 0, 0, 0
	f.wp, f.fl, f.total = 0, 0, 0
	f.sum.Reset()
	var b [4]byte
	if err := f.aligned(b[:2]); err != nil {
		return 0, fmt.Errorf("could not inflate: %w", err)
	}
	if b[0]&0x0f != 8 || b[0]>>4 > 7 || binary.BigEndian.Uint16(b[:2])%31 != 0 {
		return 0, fmt.Errorf("could not inflate: %w", errHeader)
	}
	if b[1]&0x20 != 0 {
		// A preset dictionary: pg_dump never asks for one, and zlib
		// cannot inflate without it.
		return 0, fmt.Errorf("could not inflate: %w", errDictionary)
	}
	err := f.deflate()
	f.flush()
	if err != nil {
		return f.total, fmt.Errorf("could not inflate: %w", err)
	}
	f.drop(f.nb & 7)
	if err := f.aligned(b[:4]); err != nil {
		return f.total, fmt.Errorf("could not inflate: %w", err)
	}
	if binary.BigEndian.Uint32(b[:4]) != f.sum.Sum32() {
		return f.total, fmt.Errorf("could not inflate: %w", errChecksum)
	}
	if f.nb > 0 || f.ip < f.iend {
		return f.total, errors.New("data after the end of the compressed stream")
	}
	if f.srcErr != nil {
		if f.srcErr != io.EOF {
			return f.total, f.srcErr
		}
		return f.total, nil
	}
	var one [1]byte
	n, err := io.ReadFull(src, one[:])
	if n > 0 {
		return f.total, errors.New("data after the end of the compressed stream")
	}
	if err != io.EOF {
		return f.total, err
	}
	return f.total, nil
}

// The parallel path: the archive's goroutine cuts each compressed stream into
// segments and queues it as a job; workers inflate jobs, one each, in queue
// order. Segments in flight are bounded, so memory is too: a few segments per
// worker are held in memory; past those, with a spill file, segments wait on
// disk (up to Options.SpillMax), so that the archive's goroutine can run on to
// the next table while a worker is still inflating a large one, and every
// worker has a table to inflate. With neither free, the archive's goroutine
// waits. Every job before the one being fed is complete, so a worker always
// frees segments eventually.
const (
	segSize       = 256 << 10
	segsPerWorker = 4
)

var segPool = sync.Pool{New: func() any { b := make([]byte, segSize); return &b }}

// seg is one segment of a compressed stream: in memory (buf), or n bytes in
// the spill file at off.
type seg struct {
	buf []byte
	off int64
	n   int
	sum uint32 // crc32c of a spilled segment
}

// job is one compressed stream: its segments, queued by the archive's
// goroutine and taken in order by one worker.
type job struct {
	start int64 // archive offset of the stream's first chunk
	what  string

	mu      sync.Mutex
	q       []seg
	closed  bool
	aborted bool          // the archive failed mid-stream
	ready   chan struct{} // a segment was queued or the job closed
}

func (j *job) push(s seg) {
	j.mu.Lock()
	j.q = append(j.q, s)
	j.mu.Unlock()
	j.signal()
}

func (j *job) close(aborted bool) {
	j.mu.Lock()
	j.closed, j.aborted = true, aborted
	j.mu.Unlock()
	j.signal()
}

func (j *job) signal() {
	select {
	case j.ready <- struct{}{}:
	default:
	}
}

// next returns the job's next segment; ok is false at its end, aborted
// when the archive failed mid-stream or the pool stopped.
func (j *job) next(ctx context.Context) (s seg, ok, aborted bool) {
	for {
		if ctx.Err() != nil {
			return seg{}, false, true
		}
		j.mu.Lock()
		if len(j.q) > 0 {
			s = j.q[0]
			j.q[0] = seg{}
			j.q = j.q[1:]
			j.mu.Unlock()
			return s, true, false
		}
		closed, ab := j.closed, j.aborted
		j.mu.Unlock()
		if closed {
			return seg{}, false, ab
		}
		select {
		case <-j.ready:
		case <-ctx.Done():
			return seg{}, false, true
		}
	}
}

type inflatePool struct {
	parent   context.Context
	ctx      context.Context
	cancel   context.CancelFunc
	jobs     chan *job
	tokens   chan struct{} // segments held in memory
	spill    *spill        // nil: no spilling
	wg       sync.WaitGroup
	inflated *atomic.Int64

	mu    sync.Mutex
	err   *Error // the failing job with the lowest offset
	local error  // a failure of the spill file, not of the archive
}

// errStopped tells the archive's goroutine to stop because a worker failed.
var errStopped = errors.New("stopped: a worker failed")

func newInflatePool(parent context.Context, workers int, inflated *atomic.Int64, sp *spill) *inflatePool {
	ctx, cancel := context.WithCancel(parent)
	p := &inflatePool{
		parent:   parent,
		ctx:      ctx,
		cancel:   cancel,
		jobs:     make(chan *job, 64),
		tokens:   make(chan struct{}, workers*segsPerWorker),
		spill:    sp,
		inflated: inflated,
	}
	for range workers {
		p.wg.Add(1)
		go p.work()
	}
	return p
}

func (p *inflatePool) failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err != nil || p.local != nil
}

func (p *inflatePool) work() {
	defer p.wg.Done()
	f := newInflater()
	var buf []byte // spilled segments are read back into it
	for j := range p.jobs {
		src := &segReader{p: p, j: j, buf: &buf}
		n, err := f.inflate(src)
		p.inflated.Add(n)
		src.drain()
		switch {
		case src.local != nil:
			p.mu.Lock()
			if p.local == nil {
				p.local = src.local
			}
			p.mu.Unlock()
			p.cancel()
		case err != nil && !src.aborted && p.ctx.Err() == nil:
			p.mu.Lock()
			if p.err == nil || j.start < p.err.Offset {
				p.err = errAt(ErrCorrupt, j.start, "%s: %v", j.what, err)
			}
			p.mu.Unlock()
			p.cancel()
		}
	}
}

// finish waits for the workers and returns the error to report: the
// earliest of the archive's and the workers'.
func (p *inflatePool) finish(err error) error {
	close(p.jobs)
	p.wg.Wait()
	p.cancel()
	p.spill.close()
	if p.err != nil {
		var ae *Error
		if err == nil || errors.Is(err, errStopped) || (errors.As(err, &ae) && ae.Offset > p.err.Offset) {
			return p.err
		}
	}
	if p.local != nil && (err == nil || errors.Is(err, errStopped)) {
		return p.local
	}
	if errors.Is(err, errStopped) {
		return fmt.Errorf("read archive: %w", p.parent.Err())
	}
	return err
}

// feed reads one compressed stream's chunks and hands them to the workers.
func (a *archive) feed(what string) error {
	p := a.pool
	j := &job{start: a.pos, what: what, ready: make(chan struct{}, 1)}
	select {
	case p.jobs <- j:
	case <-p.ctx.Done():
		return errStopped
	}
	if a.stage == nil {
		a.stage = (*segPool.Get().(*[]byte))[:0]
	}
	abort := func(err error) error {
		a.stage = a.stage[:0]
		j.close(true)
		return err
	}
	for {
		n, err := a.readInt(what)
		if err != nil {
			return abort(err)
		}
		if n == 0 {
			break
		}
		if n < 0 {
			return abort(a.fail(ErrCorrupt, "%s has a chunk of negative length %d", what, n))
		}
		left := int(n)
		for left > 0 {
			if len(a.stage) == cap(a.stage) {
				if !a.send(j) {
					return abort(errStopped)
				}
			}
			k := min(left, cap(a.stage)-len(a.stage))
			m, err := io.ReadFull(a.br, a.stage[len(a.stage):len(a.stage)+k])
			a.pos += int64(m)
			a.stage = a.stage[:len(a.stage)+m]
			left -= m
			if err != nil {
				return abort(a.ioErr(err, what))
			}
		}
	}
	if len(a.stage) > 0 && !a.send(j) {
		return abort(errStopped)
	}
	j.close(false)
	return nil
}

// send queues the staged segment on j: in memory when a memory token is
// free at once; else in the spill file or memory, whichever frees first.
// It returns false when the pool stopped.
func (a *archive) send(j *job) bool {
	p := a.pool
	inMemory := func() {
		j.push(seg{buf: a.stage, n: len(a.stage)})
		a.stage = (*segPool.Get().(*[]byte))[:0]
	}
	select {
	case p.tokens <- struct{}{}:
		inMemory()
		return true
	default:
	}
	var spillTokens chan struct{} // nil (never ready) without a working spill file
	if p.spill.usable() {
		spillTokens = p.spill.tokens
	}
	select {
	case p.tokens <- struct{}{}:
		inMemory()
	case spillTokens <- struct{}{}:
		off, sum, err := p.spill.write(a.stage)
		if err != nil {
			// Out of disk, say: carry on in memory only.
			<-spillTokens
			select {
			case p.tokens <- struct{}{}:
				inMemory()
			case <-p.ctx.Done():
				return false
			}
			return true
		}
		j.push(seg{off: off, n: len(a.stage), sum: sum})
		a.stage = a.stage[:0]
	case <-p.ctx.Done():
		return false
	}
	return true
}

// segReader reads a job's segments in order, returning each to the pool and
// its token to the budget once consumed.
type segReader struct {
	p       *inflatePool
	j       *job
	buf     *[]byte // the worker's buffer for spilled segments
	cur     seg
	data    []byte
	off     int
	aborted bool
	local   error // reading the spill file failed
}

var errAborted = errors.New("stream aborted")

func (s *segReader) Read(b []byte) (int, error) {
	for s.off == len(s.data) {
		s.release()
		sg, ok, aborted := s.j.next(s.p.ctx)
		if !ok {
			if aborted {
				s.aborted = true
				return 0, errAborted
			}
			return 0, io.EOF
		}
		s.cur, s.off = sg, 0
		if sg.buf != nil {
			s.data = sg.buf
			continue
		}
		if *s.buf == nil {
			*s.buf = make([]byte, segSize)
		}
		s.data = (*s.buf)[:sg.n]
		if err := s.p.spill.read(s.data, sg.off, sg.sum); err != nil {
			s.local = err
			s.aborted = true
			return 0, errAborted
		}
	}
	n := copy(b, s.data[s.off:])
	s.off += n
	return n, nil
}

// release gives back the segment being read: its buffer and memory token,
// or its place in the spill file.
func (s *segReader) release() {
	switch {
	case s.cur.buf != nil:
		b := s.cur.buf[:0]
		segPool.Put(&b)
		<-s.p.tokens
	case s.cur.n > 0:
		s.p.spill.free(s.cur.off)
	}
	s.cur, s.data, s.off = seg{}, nil, 0
}

// drain consumes what is left of the job, so its segments go back.
func (s *segReader) drain() {
	s.release()
	for {
		sg, ok, aborted := s.j.next(s.p.ctx)
		if !ok {
			s.aborted = s.aborted || aborted
			if s.p.ctx.Err() != nil {
				s.abandon()
			}
			return
		}
		s.cur = sg
		s.release()
	}
}

// abandon releases what the job still holds once the pool has stopped.
func (s *segReader) abandon() {
	s.j.mu.Lock()
	q := s.j.q
	s.j.q = nil
	s.j.mu.Unlock()
	for _, sg := range q {
		s.cur = sg
		s.release()
	}
}
