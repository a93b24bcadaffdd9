package verifier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// RangeSource is a Source that can read part of one version of an object. A
// drill downloads a large backup from it in parallel parts, as `aws s3 cp`
// does: S3 serves each connection at a fraction of what it serves several
// (AWS's guidance is a connection per 85-90 MB/s wanted).
type RangeSource interface {
	Source
	// OpenRange streams the bytes [off, end) of the object's version etag
	// (the listing's), of size bytes; a version replaced since, or an
	// object of another size, is an error.
	OpenRange(ctx context.Context, key, etag string, off, end, size int64) (io.ReadCloser, error)
}

// The parallel download's shape: parts of partSize, partStreams at once, for
// objects of at least partsMin (smaller ones are one GET). Variables for the
// tests.
var (
	partSize    int64 = 8 << 20
	partStreams       = 8
	partsMin    int64 = 32 << 20
)

// partCopyBuf is what each stream copies through: the download's memory is
// partStreams of these, whatever the object's size.
const partCopyBuf = 256 << 10

// useParts says whether VerifyTo downloads b in parts into to: a drill's copy
// (a file), from a RangeSource, of a backup large enough and with an ETag
// that pins its version.
func useParts(src Source, to io.Writer, b Backup) (RangeSource, *os.File) {
	rs, ok := src.(RangeSource)
	f, isFile := to.(*os.File)
	if !ok || !isFile || b.Size < partsMin || b.ETag == "" {
		return nil, nil
	}
	return rs, f
}

// partFile downloads an object into a file in parts, partStreams at once,
// and is read back in order as the parts arrive, so that VerifyTo hashes and
// counts what it reads from it as it does a single GET's body. The parts go
// straight to the file: memory does not grow with the object.
type partFile struct {
	f      *os.File
	size   int64
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	stop   func() bool // ends the wake-up on ctx's end

	parts int64 // how many
	// firstBody is part 0's, opened by openParts; the stream that takes
	// part 0 (the first handed out) reads and closes it, and Close does if
	// none took it.
	firstBody *closeOnce
	mu        sync.Mutex
	cond      *sync.Cond
	// done holds the bytes written of each part from first on that has
	// any, from its start: no more parts than are being or have been
	// fetched, whatever size the listing gives.
	done  map[int64]int64
	first int64 // the first part not whole
	front int64 // bytes [0, front) of the object are in the file
	err   error // the first failure
	pos   int64 // the next byte Read returns (Read's alone: no lock)
	taken int64 // parts handed to a stream
}

// ErrRangeIgnored is returned by a RangeSource whose store answered a ranged
// GET with the whole object: the download is then one GET.
var ErrRangeIgnored = errors.New("the store ignores Range and sends the whole object")

// openParts starts the download of b (b.Size bytes of version b.ETag) into f.
// Its first part is asked for before it returns: a store that ignores Range
// (ErrRangeIgnored) is read with one GET instead, and any other failure to
// open it is the download's.
func openParts(ctx context.Context, src RangeSource, b Backup, f *os.File) (*partFile, error) {
	n := b.Size / partSize
	if b.Size%partSize != 0 {
		n++
	}
	ctx, cancel := context.WithCancelCause(ctx)
	p := &partFile{f: f, size: b.Size, parts: n, cancel: cancel, done: map[int64]int64{}}
	first, err := src.OpenRange(ctx, b.Key, b.ETag, 0, p.partLen(0), p.size)
	if err != nil {
		cancel(err)
		return nil, err
	}
	p.firstBody = &closeOnce{ReadCloser: first}
	p.cond = sync.NewCond(&p.mu)
	p.stop = context.AfterFunc(ctx, func() { p.fail(context.Cause(ctx)) })
	for range min(int64(partStreams), n) {
		p.wg.Add(1)
		go p.stream(ctx, src, b)
	}
	return p, nil
}

func (p *partFile) partLen(i int64) int64 { return min(partSize, p.size-i*partSize) }

// next hands out the next part to fetch, in order; -1 when none is left or
// the download failed.
func (p *partFile) next() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil || p.taken == p.parts {
		return -1
	}
	p.taken++
	return p.taken - 1
}

func (p *partFile) stream(ctx context.Context, src RangeSource, b Backup) {
	defer p.wg.Done()
	buf := make([]byte, partCopyBuf)
	for i := p.next(); i >= 0; i = p.next() {
		if err := p.fetch(ctx, src, b, i, buf); err != nil {
			p.fail(err)
			return
		}
	}
}

// fetch copies part i into the file, telling Read of every chunk written.
func (p *partFile) fetch(ctx context.Context, src RangeSource, b Backup, i int64, buf []byte) error {
	off, end := i*partSize, i*partSize+p.partLen(i)
	var body io.ReadCloser = p.firstBody // part 0, opened by openParts
	if i > 0 {
		var err error
		if body, err = src.OpenRange(ctx, b.Key, b.ETag, off, end, p.size); err != nil {
			return fmt.Errorf("open %s: %w", b.Key, err)
		}
	}
	defer body.Close()
	for at := off; ; {
		n, rerr := body.Read(buf[:min(int64(len(buf)), end-at)])
		if n > 0 {
			if _, err := p.f.WriteAt(buf[:n], at); err != nil {
				return fmt.Errorf("write a copy of %s at byte %d: %w", b.Key, at, err)
			}
			at += int64(n)
			p.wrote(i, int64(n))
		}
		switch {
		case at == end:
			return nil
		case rerr == io.EOF:
			return fmt.Errorf("get %s bytes %d-%d: the body ended at byte %d", b.Key, off, end-1, at)
		case rerr != nil:
			return rerr
		}
	}
}

// wrote records n more bytes of part i in the file and moves the front.
func (p *partFile) wrote(i int64, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done[i] += n
	if i != p.first {
		return
	}
	for p.first < p.parts && p.done[p.first] == p.partLen(p.first) {
		delete(p.done, p.first)
		p.first++
	}
	if p.first == p.parts {
		p.front = p.size
	} else {
		p.front = p.first*partSize + p.done[p.first]
	}
	p.cond.Broadcast()
}

// fail records the download's first failure, ends the other streams and
// wakes Read.
func (p *partFile) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel(err)
	p.cond.Broadcast()
}

// Read returns the object's bytes in order, from the file, as far as the
// parts have arrived, then the download's failure if it failed: bytes that
// all arrived are read to their end whatever happens after.
func (p *partFile) Read(b []byte) (int, error) {
	p.mu.Lock()
	for p.pos >= p.front && p.err == nil && p.pos < p.size {
		p.cond.Wait()
	}
	front, failed := p.front, p.err
	p.mu.Unlock()
	switch {
	case p.pos >= p.size:
		return 0, io.EOF
	case p.pos >= front:
		return 0, failed
	}
	n := min(int64(len(b)), front-p.pos)
	m, err := p.f.ReadAt(b[:n], p.pos)
	p.pos += int64(m)
	if err != nil && !(errors.Is(err, io.EOF) && int64(m) == n) {
		return m, fmt.Errorf("read back the copy at byte %d: %w", p.pos, err)
	}
	return m, nil
}

// Close ends the download and waits for its streams.
func (p *partFile) Close() error {
	p.cancel(errors.New("download closed"))
	p.stop()
	p.wg.Wait()
	return p.firstBody.Close()
}

// closeOnce closes its ReadCloser once, however often it is asked to.
type closeOnce struct {
	io.ReadCloser
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.ReadCloser.Close() })
	return c.err
}
