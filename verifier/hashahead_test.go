package verifier

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Every way of cutting the writes gives sha256 of what was written: writes
// that end on, just before and just after a buffer's end, empty writes, and
// writes of several buffers at once.
func TestAsyncHashMatches(t *testing.T) {
	data := make([]byte, 5*asyncHashBuf+123)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	cuts := map[string][]int{
		"one write":    {len(data)},
		"buffer sized": {asyncHashBuf, asyncHashBuf, asyncHashBuf, asyncHashBuf, asyncHashBuf, 123},
		"off by one":   {asyncHashBuf - 1, 1, 0, asyncHashBuf + 1, 2*asyncHashBuf - 1, 0},
		"small":        {7, 4096, 65536, 1, 262144},
		"many at once": {3*asyncHashBuf + 5, 0, 1},
		"empty first":  {0, len(data)},
	}
	for name, sizes := range cuts {
		for _, declared := range []int64{int64(len(data)), 0, -1, 100} {
			h := newHash(declared)
			var want bytes.Buffer
			rest := data
			for i := 0; len(rest) > 0; i++ {
				n := min(sizes[i%len(sizes)], len(rest))
				if w, err := h.Write(rest[:n]); err != nil || w != n {
					t.Fatalf("%s: Write = %d, %v; want %d", name, w, err, n)
				}
				want.Write(rest[:n])
				rest = rest[n:]
			}
			got := h.Sum()
			h.Close()
			if sum := sha256.Sum256(want.Bytes()); !bytes.Equal(got, sum[:]) {
				t.Errorf("%s, size %d: sum %x, want %x", name, declared, got, sum)
			}
		}
	}
}

func TestAsyncHashSmallObjectsInLine(t *testing.T) {
	if _, ok := newHash(asyncHashMin - 1).(syncHash); !ok {
		t.Error("a small object is hashed on a goroutine of its own")
	}
	for _, size := range []int64{asyncHashMin, 0, -1} {
		h := newHash(size)
		if _, ok := h.(*asyncHash); !ok {
			t.Errorf("size %d: hashed in line, want on its own goroutine", size)
		}
		h.Close()
	}
}

// A verification whose reader panicked closes the hash without asking for
// the sum (every other way out of VerifyTo asks for it, a cancelled read
// too): its goroutine ends, and a second Close does no harm. The bound on
// buffers is TestAsyncHashHoldsAtMostItsBuffers's: 3 MiB written here never
// needs a fifth.
func TestAsyncHashCloseWithoutSum(t *testing.T) {
	h := newHash(-1).(*asyncHash)
	if _, err := h.Write(make([]byte, 3*asyncHashBuf+10)); err != nil {
		t.Fatal(err)
	}
	h.Close()
	select {
	case <-h.done:
	default:
		t.Fatal("the hashing goroutine is still running after Close")
	}
	h.Close()
}

// BenchmarkHashAndCopy: the download's one pass (read the object, hash it,
// write the drill's copy), with the hash in line and on its own goroutine.
// `go test -run '^$' -bench HashAndCopy ./verifier/`; the numbers on the
// bench machine (2 CPUs) are in the message of the commit that added it.
func BenchmarkHashAndCopy(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "object")
	data := make([]byte, 256<<20)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"inline", "async"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				in, err := os.Open(src)
				if err != nil {
					b.Fatal(err)
				}
				out, err := os.Create(filepath.Join(dir, "copy"))
				if err != nil {
					b.Fatal(err)
				}
				var h interface {
					io.Writer
					Sum() []byte
					Close()
				} = syncHash{sha256.New()}
				if mode == "async" {
					h = newHash(-1)
				}
				if _, err := io.CopyBuffer(io.MultiWriter(h, out), in, make([]byte, 256<<10)); err != nil {
					b.Fatal(err)
				}
				h.Sum()
				h.Close()
				in.Close()
				out.Close()
				if err := os.Remove(filepath.Join(dir, "copy")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// VerifyTo's TeeReader hands the hash bufio's own buffer, which it fills
// again at once: Write must keep a copy, not the slice it was given.
func TestAsyncHashCopiesWhatItIsGiven(t *testing.T) {
	data := randomBytes(t, 6*asyncHashBuf+77)
	want := sha256.Sum256(data)
	for _, chunk := range []int{256 << 10, asyncHashBuf, 3*asyncHashBuf + 1} {
		h := newHash(-1)
		buf := make([]byte, chunk)
		for rest := data; len(rest) > 0; {
			n := copy(buf, rest)
			if _, err := h.Write(buf[:n]); err != nil {
				t.Fatal(err)
			}
			for i := range buf[:n] {
				buf[i] = 0xaa // the reader's next fill
			}
			rest = rest[n:]
		}
		if got := h.Sum(); !bytes.Equal(got, want[:]) {
			t.Errorf("writes of %d bytes from one reused buffer: sum %x, want %x", chunk, got, want)
		}
		h.Close()
	}
}

// gatedHash holds every Write until gate is closed, as a hashing that falls
// behind the download would.
type gatedHash struct {
	hash.Hash
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedHash) Write(p []byte) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	return g.Hash.Write(p)
}

// While the hashing is stuck, Write stops once asyncHashBufs buffers are
// full: a verification holds at most asyncHashBufs x asyncHashBuf bytes,
// however far the download runs ahead of the hashing.
func TestAsyncHashHoldsAtMostItsBuffers(t *testing.T) {
	g := &gatedHash{Hash: sha256.New(), entered: make(chan struct{}, 1), gate: make(chan struct{})}
	a := newAsyncHash(g)
	data := randomBytes(t, 16*asyncHashBuf)
	var accepted atomic.Int64
	wrote := make(chan error, 1)
	go func() {
		for rest := data; len(rest) > 0; {
			n := min(64<<10, len(rest))
			if _, err := a.Write(rest[:n]); err != nil {
				wrote <- err
				return
			}
			accepted.Add(int64(n))
			rest = rest[n:]
		}
		wrote <- nil
	}()
	<-g.entered
	// Wait for Write to stop taking bytes (a pause of the writer's own only
	// makes the count smaller, never larger than the bound).
	last := int64(-1)
	for deadline := time.Now().Add(20 * time.Second); ; {
		time.Sleep(50 * time.Millisecond)
		n := accepted.Load()
		if n == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Write still taking bytes after 20 s: %d", n)
		}
		last = n
	}
	select {
	case err := <-wrote:
		t.Fatalf("all %d bytes written (%v) while the hashing held its first buffer", len(data), err)
	default:
	}
	if last > asyncHashBufs*asyncHashBuf {
		t.Fatalf("Write took %d bytes while the hashing was stuck, the bound is %d", last, asyncHashBufs*asyncHashBuf)
	}
	close(g.gate)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if got, want := a.Sum(), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Errorf("sum %x, want %x", got, want)
	}
	if a.made > asyncHashBufs {
		t.Errorf("%d buffers made, the bound is %d", a.made, asyncHashBufs)
	}
}

// Sum after Close is still the sum of every byte written (Close used to drop
// the buffer being filled, and Sum then told a wrong sum), and a Write after
// Close fails rather than waiting forever for a buffer.
func TestAsyncHashAfterClose(t *testing.T) {
	data := randomBytes(t, 5*asyncHashBuf+123)
	h := newHash(-1)
	if _, err := h.Write(data); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if got, want := h.Sum(), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Errorf("Sum after Close: %x, want %x", got, want)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := h.Write(make([]byte, 2*asyncHashBuf))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err == nil {
			t.Error("a Write after Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Write after Close still waits after 10 s")
	}
}

// hashGoroutines counts the hashing goroutines alive, waiting up to a
// second for those whose done is closed to end.
func hashGoroutines() int {
	var n int
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		for {
			m := runtime.Stack(buf, true)
			if m < len(buf) {
				buf = buf[:m]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		n = bytes.Count(buf, []byte("(*asyncHash).run("))
		if n == 0 || time.Now().After(deadline) {
			return n
		}
	}
}

// goArchive reads up to n bytes of the archive on a goroutine of its own,
// as pg_restore's feeder does, then fails (n >= 0) or reads to the end (n < 0).
type goArchive struct{ n int64 }

func (g goArchive) ReadArchive(_ context.Context, r io.Reader) error {
	errc := make(chan error, 1)
	go func() {
		if g.n < 0 {
			_, err := io.Copy(io.Discard, r)
			errc <- err
			return
		}
		_, _ = io.CopyN(io.Discard, r, g.n)
		errc <- errors.New("broken archive: a bad block")
	}()
	return <-errc
}

// stallSource answers its object's first n bytes, then blocks until the
// read's context ends (a stalled S3 answer), or fails (fail != nil), after
// calling at (cancel, for a cancelled drill).
type stallSource struct {
	*memSource
	n    int
	fail error
	at   func()
}

func (s stallSource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(s.objs[key][:s.n]), stallReader{ctx, s.fail, s.at})), nil
}

type stallReader struct {
	ctx  context.Context
	fail error
	at   func()
}

func (s stallReader) Read([]byte) (int, error) {
	if s.at != nil {
		s.at()
	}
	if s.fail != nil {
		return 0, s.fail
	}
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

// TestVerifyToLargeObjects: every way out of VerifyTo with an object hashed
// on its own goroutine (one over asyncHashMin) reports the sha256 of the
// bytes read and its verdict, and leaves no hashing goroutine behind.
func TestVerifyToLargeObjects(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return t0 }
	body := append(customHeader(8, 0), randomBytes(t, 3*asyncHashBuf+4321)...)
	flipped := bytes.Clone(body)
	flipped[len(flipped)-1000] ^= 1 // after the point where the archive reader stops
	cut := 2*asyncHashBuf + 12345
	for _, c := range []struct {
		name    string
		obj     []byte // what the source answers; its checksum is body's
		size    int64  // the listing's size (0: len(body))
		src     func(*memSource, context.CancelFunc) Source
		ar      ArchiveReader
		timeout time.Duration
		reason  Reason // "" and !cancelled: OK
		read    int    // bytes read and hashed
		err     string // in Result.Error
		cancel  bool   // VerifyTo returns context.Canceled
	}{
		{name: "good", obj: body, ar: goArchive{-1}, read: len(body)},
		{name: "read on the caller's goroutine", obj: body, ar: drainArchive{}, read: len(body)},
		{name: "archive reader stops early", obj: body, ar: goArchive{4096}, reason: ReasonUnreadableArchive, read: len(body), err: "bad block"},
		{name: "bit flip after an early stop", obj: flipped, ar: goArchive{4096}, reason: ReasonMismatch, read: len(body), err: "sha256"},
		{name: "bit flip", obj: flipped, ar: drainArchive{}, reason: ReasonMismatch, read: len(body), err: "sha256"},
		{name: "panic", obj: body, ar: panicArchive{}, reason: ReasonUnreadableArchive, err: "panic"},
		{name: "shorter than listed", obj: body, size: int64(len(body)) + asyncHashBuf, ar: drainArchive{}, reason: ReasonDownloadError, read: len(body), err: "the listing says"},
		{name: "longer than listed", obj: body, size: asyncHashBuf, ar: drainArchive{}, reason: ReasonDownloadError, read: len(body), err: "the listing says"},
		{name: "body fails mid-way", obj: body, ar: drainArchive{}, reason: ReasonDownloadError, read: cut, err: "connection reset",
			src: func(m *memSource, _ context.CancelFunc) Source {
				return stallSource{memSource: m, n: cut, fail: errors.New("connection reset by peer")}
			}},
		{name: "verify.timeout", obj: body, ar: drainArchive{}, timeout: 300 * time.Millisecond, reason: ReasonDownloadError, read: cut, err: "verify.timeout",
			src: func(m *memSource, _ context.CancelFunc) Source { return stallSource{memSource: m, n: cut} }},
		{name: "cancelled", obj: body, ar: drainArchive{}, read: cut, cancel: true,
			src: func(m *memSource, cancel context.CancelFunc) Source {
				return stallSource{memSource: m, n: cut, at: cancel}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, b := oneDump(body, t0)
			m.objs[b.Key] = c.obj
			if c.size != 0 {
				b.Size = c.size
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var src Source = m
			if c.src != nil {
				src = c.src(m, cancel)
			}
			var copied bytes.Buffer
			r, err := VerifyTo(ctx, src, c.ar, b, nil, now, CopyOptions{To: &copied,
				Limits: VerifySpec{PgRestoreOnly: true, Timeout: c.timeout}})
			if n := hashGoroutines(); n != 0 {
				t.Errorf("%d hashing goroutines left", n)
			}
			if !verdictIs(t, r, err, c.cancel, c.reason, c.err) {
				return
			}
			if c.reason == ReasonUnreadableArchive && c.err == "panic" {
				return // the sum is not reached
			}
			if want := hexsum(c.obj[:c.read]); r.SHA256 != want || r.BytesRead != int64(c.read) {
				t.Errorf("read %d bytes, sha256 %s; want %d, %s", r.BytesRead, r.SHA256, c.read, want)
			}
			if !bytes.Equal(copied.Bytes(), c.obj[:c.read]) {
				t.Errorf("the copy has %d bytes, want the %d read", copied.Len(), c.read)
			}
		})
	}
}

// verdictIs checks what VerifyTo returned: context.Canceled when cancelled,
// else a Result that passed (reason "") or failed for reason, its error
// naming want. It says whether the case goes on to its bytes.
func verdictIs(t *testing.T, r Result, err error, cancelled bool, reason Reason, want string) bool {
	t.Helper()
	if cancelled {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if r.OK != (reason == "") || r.Reason != reason || !strings.Contains(r.Error, want) {
		t.Fatalf("ok %v, reason %q (%s); want %q naming %q", r.OK, r.Reason, r.Error, reason, want)
	}
	return true
}
