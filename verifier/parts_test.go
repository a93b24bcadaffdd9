package verifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rangeSource serves memSource's objects in ranges, in small reads after
// random short delays, so that parts arrive out of order. fault, when set,
// may replace a range's body.
type rangeSource struct {
	*memSource
	ranges atomic.Int64
	open   error // when set, every OpenRange fails with it
	mu     sync.Mutex
	etags  map[string]string // the version each key is at (a replaced object moves on)
	fault  func(ctx context.Context, off int64, body io.Reader) io.Reader
}

func (s *rangeSource) OpenRange(ctx context.Context, key, etag string, off, end, size int64) (io.ReadCloser, error) {
	s.ranges.Add(1)
	if s.open != nil {
		return nil, s.open
	}
	b, ok := s.objs[key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	s.mu.Lock()
	cur := s.etags[key]
	s.mu.Unlock()
	if size != int64(len(b)) {
		return nil, fmt.Errorf("get %s: the store answered bytes %d-%d/%d, not of %d bytes", key, off, end-1, len(b), size)
	}
	if cur != "" && cur != etag {
		return nil, fmt.Errorf("get %s: PreconditionFailed: At least one of the pre-conditions you specified did not hold", key)
	}
	var r io.Reader = &slowReader{ctx: ctx, r: bytes.NewReader(b[off:end])}
	if s.fault != nil {
		r = s.fault(ctx, off, r)
	}
	return io.NopCloser(r), nil
}

// slowReader answers at most 10 KiB a read, now and then after a pause.
type slowReader struct {
	ctx context.Context
	r   io.Reader
}

func (s *slowReader) Read(p []byte) (int, error) {
	if rand.IntN(8) == 0 {
		select {
		case <-time.After(time.Duration(rand.IntN(3)) * time.Millisecond):
		case <-s.ctx.Done():
			return 0, s.ctx.Err()
		}
	}
	return s.r.Read(p[:min(len(p), 10<<10)])
}

// smallParts makes the parallel download take objects of 100 KiB and up, in
// parts of 64 KiB + 7 bytes, 3 at once.
func smallParts(t *testing.T) {
	ps, st, pm := partSize, partStreams, partsMin
	partSize, partStreams, partsMin = 64<<10+7, 3, 100<<10
	t.Cleanup(func() { partSize, partStreams, partsMin = ps, st, pm })
}

// partStreamsLeft counts the download's goroutines still running, waiting
// a little for them to go.
func partStreamsLeft() int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		n := strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*partFile).stream")
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestVerifyToInParts: a drill's copy of a large backup from a RangeSource is
// downloaded in parts, in parallel, into its file, and the Result is the one
// a single GET gives: the same sum and bytes for a good backup, the same
// verdicts for a flipped bit, a failed or short part, a replaced object, a
// stall past verify.timeout and a cancel, and no stream left running.
func TestVerifyToInParts(t *testing.T) {
	smallParts(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return t0 }
	body := append(customHeader(8, 0), randomBytes(t, 20*(64<<10)+4321)...)
	flipped := bytes.Clone(body)
	flipped[len(flipped)-1000] ^= 1
	failAt := int64(7 * (64<<10 + 7))
	for _, c := range []struct {
		name    string
		obj     []byte
		fault   func(ctx context.Context, off int64, r io.Reader) io.Reader
		replace bool // the object's version changes after the listing
		timeout time.Duration
		cancel  bool
		reason  Reason
		err     string
	}{
		{name: "good", obj: body},
		{name: "bit flip", obj: flipped, reason: ReasonMismatch, err: "sha256"},
		{name: "a part fails", obj: body, reason: ReasonDownloadError, err: "connection reset",
			fault: func(_ context.Context, off int64, r io.Reader) io.Reader {
				if off == failAt {
					return io.MultiReader(io.LimitReader(r, 5000), iotestErr{errors.New("connection reset by peer")})
				}
				return r
			}},
		{name: "a part ends early", obj: body, reason: ReasonDownloadError, err: "the body ended",
			fault: func(_ context.Context, off int64, r io.Reader) io.Reader {
				if off == failAt {
					return io.LimitReader(r, 5000)
				}
				return r
			}},
		{name: "replaced after the listing", obj: body, replace: true, reason: ReasonDownloadError, err: "PreconditionFailed"},
		{name: "a part stalls past verify.timeout", obj: body, timeout: 300 * time.Millisecond, reason: ReasonDownloadError, err: "verify.timeout",
			fault: func(ctx context.Context, off int64, r io.Reader) io.Reader {
				if off == failAt {
					return io.MultiReader(io.LimitReader(r, 5000), stallReader{ctx: ctx})
				}
				return r
			}},
		{name: "cancelled", obj: body, cancel: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, b := oneDump(body, t0)
			m.objs[b.Key], b.ETag = c.obj, "v1"
			src := &rangeSource{memSource: m, etags: map[string]string{}, fault: c.fault}
			if c.replace {
				src.etags[b.Key] = "another version"
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancel {
				src.fault = func(ctx context.Context, off int64, r io.Reader) io.Reader {
					if off == failAt {
						cancel()
						return io.MultiReader(io.LimitReader(r, 5000), stallReader{ctx: ctx})
					}
					return r
				}
			}
			path := filepath.Join(t.TempDir(), "backup.dump")
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := VerifyTo(ctx, src, drainArchive{}, b, nil, now, CopyOptions{To: f, HeaderOnly: true,
				Limits: VerifySpec{Timeout: c.timeout}})
			if n := partStreamsLeft(); n != 0 {
				t.Errorf("%d download streams left running", n)
			}
			want := int64(2) // a replaced object fails its first part, and the others stop
			if c.replace {
				want = 1
			}
			if src.ranges.Load() < want || m.opens != 0 {
				t.Errorf("%d ranged GETs and %d whole ones; want the download in parts", src.ranges.Load(), m.opens)
			}
			if !verdictIs(t, r, err, c.cancel, c.reason, c.err) {
				return
			}
			if c.reason == ReasonDownloadError {
				return
			}
			if want := hexsum(c.obj); r.SHA256 != want || r.BytesRead != int64(len(c.obj)) {
				t.Errorf("read %d bytes, sha256 %s; want %d, %s", r.BytesRead, r.SHA256, len(c.obj), want)
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, c.obj) {
				t.Errorf("the copy has %d bytes (%v), not the object's %d", len(got), err, len(c.obj))
			}
		})
	}
}

// TestVerifyToInPartsOnlyWhereItPays: a small object, a copy that is not a
// file (the watch loop's pass has none) and a Source without ranges are
// read with one GET.
func TestVerifyToInPartsOnlyWhereItPays(t *testing.T) {
	smallParts(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return t0 }
	large := append(customHeader(8, 0), randomBytes(t, 200<<10)...)
	small := append(customHeader(8, 0), randomBytes(t, 50<<10)...)
	for _, c := range []struct {
		name   string
		obj    []byte
		toFile bool
		ranges bool
	}{
		{"small object", small, true, true},
		{"no file", large, false, true},
		{"no ranges", large, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, b := oneDump(c.obj, t0)
			b.ETag = "v1"
			rs := &rangeSource{memSource: m}
			var src Source = m
			if c.ranges {
				src = rs
			}
			var to io.Writer = &bytes.Buffer{}
			if c.toFile {
				f, err := os.Create(filepath.Join(t.TempDir(), "copy"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				to = f
			}
			r, err := VerifyTo(context.Background(), src, drainArchive{}, b, nil, now, CopyOptions{To: to, HeaderOnly: true})
			if err != nil || !r.OK {
				t.Fatalf("%v %+v", err, r)
			}
			if rs.ranges.Load() != 0 || m.opens != 1 {
				t.Errorf("%d ranged GETs and %d whole ones; want one GET", rs.ranges.Load(), m.opens)
			}
		})
	}
}

// TestVerifyToInPartsListedSizeTooLarge: a listing (a hostile or broken
// store's) that gives a small object an enormous size fails the download as
// download_error, as one GET does, without a panic and without memory that
// grows with the size listed.
func TestVerifyToInPartsListedSizeTooLarge(t *testing.T) {
	smallParts(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return t0 }
	body := append(customHeader(8, 0), randomBytes(t, 300<<10)...)
	for _, size := range []int64{1 << 40, math.MaxInt64 - 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			m, b := oneDump(body, t0)
			b.ETag, b.Size = "v1", size
			src := &rangeSource{memSource: m, etags: map[string]string{}}
			f, err := os.OpenFile(filepath.Join(t.TempDir(), "backup.dump"), os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			r, err := VerifyTo(context.Background(), src, drainArchive{}, b, nil, now, CopyOptions{To: f, HeaderOnly: true})
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if r.Reason != ReasonDownloadError || r.Stack != "" {
				t.Fatalf("reason %q (%s); want download_error", r.Reason, r.Error)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
				t.Errorf("the download allocated %d MiB for a %d-byte object", grew>>20, len(body))
			}
			if src.ranges.Load() == 0 {
				t.Error("no ranged GETs: the download was not in parts")
			}
		})
	}
}

// TestVerifyToInPartsSizes: objects of a whole number of parts, one byte
// more or less, and of exactly partsMin come whole into the copy, with
// their sum.
func TestVerifyToInPartsSizes(t *testing.T) {
	smallParts(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return t0 }
	for _, size := range []int64{4 * partSize, 4*partSize - 1, 4*partSize + 1, partsMin} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			obj := append(customHeader(8, 0), randomBytes(t, int(size))...)[:size]
			m, b := oneDump(obj, t0)
			b.ETag = "v1"
			src := &rangeSource{memSource: m, etags: map[string]string{}}
			path := filepath.Join(t.TempDir(), "backup.dump")
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := VerifyTo(context.Background(), src, drainArchive{}, b, nil, now, CopyOptions{To: f, HeaderOnly: true})
			if err != nil || !r.OK || r.SHA256 != hexsum(obj) || r.BytesRead != size {
				t.Fatalf("%v: ok %v %s (%s), %d bytes", err, r.OK, r.Reason, r.Error, r.BytesRead)
			}
			if want := (size + partSize - 1) / partSize; src.ranges.Load() != want || m.opens != 0 {
				t.Errorf("%d ranged GETs and %d whole ones; want %d parts", src.ranges.Load(), m.opens, want)
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, obj) {
				t.Errorf("the copy has %d bytes (%v), not the object's %d", len(got), err, len(obj))
			}
		})
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// TestVerifyToInPartsFirstPart: the first part is asked for before the
// download starts. A store that ignores Range is read with one GET, as
// before parts; any other failure to open it is the download's, with no
// whole GET behind it.
func TestVerifyToInPartsFirstPart(t *testing.T) {
	smallParts(t)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return t0 }
	obj := append(customHeader(8, 0), randomBytes(t, 300<<10)...)
	for _, c := range []struct {
		name   string
		open   error
		reason Reason
		opens  int
	}{
		{"the store ignores Range", fmt.Errorf("get db.dump bytes 0-65542: %w", ErrRangeIgnored), "", 1},
		{"the first part fails", errors.New("get db.dump: AccessDenied: Access Denied"), ReasonDownloadError, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, b := oneDump(obj, t0)
			b.ETag = "v1"
			src := &rangeSource{memSource: m, open: c.open}
			f, err := os.OpenFile(filepath.Join(t.TempDir(), "backup.dump"), os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := VerifyTo(context.Background(), src, drainArchive{}, b, nil, now, CopyOptions{To: f, HeaderOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if r.Reason != c.reason || m.opens != c.opens || src.ranges.Load() != 1 {
				t.Fatalf("reason %q (%s), %d whole GETs, %d ranged; want %q, %d, 1", r.Reason, r.Error, m.opens, src.ranges.Load(), c.reason, c.opens)
			}
			if c.reason == "" {
				if got, err := os.ReadFile(f.Name()); err != nil || !bytes.Equal(got, obj) || r.SHA256 != hexsum(obj) {
					t.Fatalf("the copy: %d bytes, %v, sum %s", len(got), err, r.SHA256)
				}
			} else if !strings.Contains(r.Error, "AccessDenied") {
				t.Fatalf("error %q does not say why", r.Error)
			}
			if n := partStreamsLeft(); n != 0 {
				t.Errorf("%d download streams left running", n)
			}
		})
	}
}
