package pgdump

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// allocBound is the most one Read may allocate, whatever its input: buffers
// and decoder state, never a size read from the archive.
const allocBound = 16 << 20

// FuzzRead feeds arbitrary bytes (seeded with real dumps, in
// testdata/fuzz/FuzzRead) to Read: it must return, without panicking, an
// error of one of its kinds or none, and allocate less than allocBound.
func FuzzRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-stop:
			case <-time.After(10 * time.Second):
				panic("WATCHDOG: Read did not return within 10 s")
			}
		}()
		for _, workers := range []int{1, 2} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			info, err := Read(context.Background(), bytes.NewReader(data), Options{Workers: workers})
			runtime.ReadMemStats(&after)
			if got := after.TotalAlloc - before.TotalAlloc; got > allocBound {
				t.Fatalf("workers %d: allocated %d bytes for a %d-byte input", workers, got, len(data))
			}
			if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("workers %d: error of no kind: %v", workers, err)
			}
			if info.BytesRead > int64(len(data)) {
				t.Fatalf("workers %d: BytesRead %d > input %d", workers, info.BytesRead, len(data))
			}
		}
	})
}

// TestHugeLengths: lengths near the int limit in a string, a chunk and the
// TOC count are errors, promptly, with no allocation of their size.
func TestHugeLengths(t *testing.T) {
	orig := seed(t, "tiny-default")
	// The database name's length is the int after the 7 time ints; the
	// header before it is 5+6 bytes, the compression int 5, the time 35.
	const dbLen = 5 + 6 + 5 + 35
	for _, c := range []struct {
		name string
		at   int
		val  []byte
	}{
		{"string length 2^31-1", dbLen, []byte{0, 0xff, 0xff, 0xff, 0x7f}},
		{"string length -2^31", dbLen, []byte{1, 0, 0, 0, 0x80}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			copy(b[c.at:], c.val)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Read(context.Background(), bytes.NewReader(b), Options{})
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want truncated or corrupt", err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > allocBound {
				t.Fatalf("allocated %d bytes", got)
			}
		})
	}
}

// TestSourceErrorIsNotCorruption: a failing reader is reported as itself,
// not as a damaged archive.
func TestSourceErrorIsNotCorruption(t *testing.T) {
	orig := seed(t, "tiny-default")
	boom := errors.New("connection reset")
	for _, n := range []int{0, 20, 600, len(orig) - 10} {
		_, err := Read(context.Background(), &failingReader{data: orig[:n], err: boom}, Options{})
		if !errors.Is(err, boom) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrCorrupt) {
			t.Errorf("after %d bytes: got %v, want the source's error only", n, err)
		}
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestSeedsRead: the committed seeds are real dumps the reader accepts, and a
// cancelled context stops it.
func TestSeedsRead(t *testing.T) {
	for _, name := range []string{"tiny-default", "tiny-z0"} {
		data := seed(t, name)
		info, err := Read(context.Background(), bytes.NewReader(data), Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if info.DataBlocks != 2 || info.LargeObjects != 1 || info.BytesRead != int64(len(data)) {
			t.Errorf("%s: %+v", name, info)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Read(ctx, bytes.NewReader(data), Options{}); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: cancelled read returned %v", name, err)
		}
	}
}

// seed returns a dump stored in the fuzz corpus.
func seed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzRead", name))
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(b), "\n")
	body = strings.TrimSpace(body)
	body = strings.TrimSuffix(strings.TrimPrefix(body, "[]byte("), ")")
	s, err := strconv.Unquote(body)
	if err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	return []byte(s)
}

// BenchmarkRead reads the dump named by BACKUPVERIFY_BENCH_DUMP (a path),
// or else the small committed seed, with 1 and 2 inflate workers.
func BenchmarkRead(b *testing.B) {
	var data []byte
	path := os.Getenv("BACKUPVERIFY_BENCH_DUMP")
	for _, workers := range []int{1, 2} {
		b.Run("workers="+strconv.Itoa(workers), func(b *testing.B) {
			var size int64
			for b.Loop() {
				var info Info
				var err error
				if path != "" {
					f, ferr := os.Open(path)
					if ferr != nil {
						b.Fatal(ferr)
					}
					info, err = Read(context.Background(), f, Options{Workers: workers})
					f.Close()
				} else {
					if data == nil {
						data = seed(b, "tiny-default")
					}
					info, err = Read(context.Background(), bytes.NewReader(data), Options{Workers: workers})
				}
				if err != nil {
					b.Fatal(err)
				}
				size = info.BytesRead
			}
			b.SetBytes(size)
		})
	}
}

// TestSniff: only formats Read cannot interpret are sent elsewhere.
func TestSniff(t *testing.T) {
	orig := seed(t, "tiny-default")
	patch := func(at int, v byte) []byte {
		b := bytes.Clone(orig[:64])
		b[at] = v
		return b
	}
	lz4 := append([]byte("PGDMP\x01\x0f\x00\x04\x08\x01\x02"), make([]byte, 40)...)
	for _, c := range []struct {
		name        string
		head        []byte
		unsupported bool
	}{
		{"pg_dump 15 archive", orig[:64], false},
		{"short head", orig[:10], false},
		{"damaged magic", patch(0, 'X'), false},
		{"archive version 1.17", patch(6, 17), true},
		{"archive version 2.14", patch(5, 2), true},
		{"8-byte ints", patch(8, 8), true},
		{"directory format", patch(10, 5), true},
		{"lz4 compression (1.15)", lz4, true},
	} {
		err := Sniff(c.head)
		if got := errors.Is(err, ErrUnsupported); got != c.unsupported {
			t.Errorf("%s: Sniff = %v, want unsupported %v", c.name, err, c.unsupported)
		}
	}
}
