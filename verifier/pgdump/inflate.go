package pgdump

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zlib"
)

// inflater inflates zlib streams, reusing its buffers and decoder state.
type inflater struct {
	in      *bufio.Reader
	zr      io.ReadCloser
	scratch []byte
}

func newInflater() *inflater {
	return &inflater{in: bufio.NewReaderSize(nil, 64<<10), scratch: make([]byte, 64<<10)}
}

// inflate reads one zlib stream from src, which must end where the stream
// ends, and returns how many bytes it inflated to. The adler32 checksum at
// the stream's end is verified. Data after the stream's end is an error:
// pg_dump never writes it, and pg_restore spins forever on it.
func (f *inflater) inflate(src io.Reader) (int64, error) {
	f.in.Reset(src)
	var err error
	if f.zr == nil {
		f.zr, err = zlib.NewReader(f.in)
	} else {
		err = f.zr.(zlib.Resetter).Reset(f.in, nil)
	}
	if err != nil {
		return 0, fmt.Errorf("could not inflate: %w", noEOF(err))
	}
	var total int64
	for {
		n, err := f.zr.Read(f.scratch)
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return total, fmt.Errorf("could not inflate: %w", noEOF(err))
		}
	}
	if f.in.Buffered() > 0 {
		return total, errors.New("data after the end of the compressed stream")
	}
	var one [1]byte
	n, err := io.ReadFull(src, one[:])
	if n > 0 {
		return total, errors.New("data after the end of the compressed stream")
	}
	if err != io.EOF {
		return total, err
	}
	return total, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// The parallel path: the archive's goroutine cuts each compressed stream into
// segments and queues it as a job; workers inflate jobs, one each, in queue
// order. Segments in flight are bounded, so memory is too: the reader waits
// for a free segment when the workers fall behind. Every job before the one
// being fed is complete, so a worker always frees segments eventually.
const (
	segSize      = 256 << 10
	segsPerWoker = 4
)

var segPool = sync.Pool{New: func() any { b := make([]byte, segSize); return &b }}

type job struct {
	start   int64 // archive offset of the stream's first chunk
	what    string
	segs    chan []byte
	aborted bool // set before segs is closed when the archive failed mid-stream
}

type inflatePool struct {
	parent   context.Context
	ctx      context.Context
	cancel   context.CancelFunc
	jobs     chan *job
	tokens   chan struct{}
	wg       sync.WaitGroup
	inflated *atomic.Int64

	mu  sync.Mutex
	err *Error // the failing job with the lowest offset
}

// errStopped tells the archive's goroutine to stop because a worker failed.
var errStopped = errors.New("stopped: a worker failed")

func newInflatePool(parent context.Context, workers int, inflated *atomic.Int64) *inflatePool {
	ctx, cancel := context.WithCancel(parent)
	p := &inflatePool{
		parent:   parent,
		ctx:      ctx,
		cancel:   cancel,
		jobs:     make(chan *job, 64),
		tokens:   make(chan struct{}, workers*segsPerWoker),
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
	return p.err != nil
}

func (p *inflatePool) work() {
	defer p.wg.Done()
	f := newInflater()
	for j := range p.jobs {
		src := &segReader{p: p, j: j}
		n, err := f.inflate(src)
		p.inflated.Add(n)
		src.drain()
		if err != nil && !src.aborted && p.ctx.Err() == nil {
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
	if p.err != nil {
		var ae *Error
		if err == nil || errors.Is(err, errStopped) || (errors.As(err, &ae) && ae.Offset > p.err.Offset) {
			return p.err
		}
	}
	if errors.Is(err, errStopped) {
		return fmt.Errorf("read archive: %w", p.parent.Err())
	}
	return err
}

// feed reads one compressed stream's chunks and hands them to the workers.
func (a *archive) feed(what string) error {
	p := a.pool
	j := &job{start: a.pos, what: what, segs: make(chan []byte, cap(p.tokens))}
	select {
	case p.jobs <- j:
	case <-p.ctx.Done():
		return errStopped
	}
	var seg []byte
	send := func() {
		if len(seg) > 0 {
			j.segs <- seg // never blocks: the channel has room for every token
		}
		seg = nil
	}
	abort := func(err error) error {
		j.aborted = true
		close(j.segs)
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
			if seg == nil || len(seg) == cap(seg) {
				send()
				select {
				case p.tokens <- struct{}{}:
				case <-p.ctx.Done():
					return abort(errStopped)
				}
				seg = (*segPool.Get().(*[]byte))[:0]
			}
			k := min(left, cap(seg)-len(seg))
			m, err := io.ReadFull(a.br, seg[len(seg):len(seg)+k])
			a.pos += int64(m)
			seg = seg[:len(seg)+m]
			left -= m
			if err != nil {
				return abort(a.ioErr(err, what))
			}
		}
	}
	send()
	close(j.segs)
	return nil
}

// segReader reads a job's segments in order, returning each to the pool and
// its token to the budget once consumed.
type segReader struct {
	p       *inflatePool
	j       *job
	cur     []byte
	off     int
	aborted bool
}

var errAborted = errors.New("stream aborted")

func (s *segReader) Read(b []byte) (int, error) {
	for s.off == len(s.cur) {
		s.release()
		select {
		case seg, ok := <-s.j.segs:
			if !ok {
				if s.j.aborted {
					s.aborted = true
					return 0, errAborted
				}
				return 0, io.EOF
			}
			s.cur, s.off = seg, 0
		case <-s.p.ctx.Done():
			s.aborted = true
			return 0, errAborted
		}
	}
	n := copy(b, s.cur[s.off:])
	s.off += n
	return n, nil
}

func (s *segReader) release() {
	if s.cur != nil {
		b := s.cur[:0]
		segPool.Put(&b)
		s.cur, s.off = nil, 0
		<-s.p.tokens
	}
}

// drain consumes what is left of the job, so its segments go back.
func (s *segReader) drain() {
	s.release()
	for {
		select {
		case seg, ok := <-s.j.segs:
			if !ok {
				if s.j.aborted {
					s.aborted = true
				}
				return
			}
			s.cur = seg
			s.release()
		case <-s.p.ctx.Done():
			s.aborted = true
			return
		}
	}
}
