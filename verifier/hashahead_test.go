package verifier

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
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

// A verification that stops early (a panic recovered, a cancelled read)
// closes the hash without asking for the sum: its goroutine ends, and a
// second Close does no harm.
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
	if h.made > asyncHashBufs {
		t.Errorf("%d buffers made, the bound is %d", h.made, asyncHashBufs)
	}
}

// BenchmarkHashAndCopy: the download's one pass (read the object, hash it,
// write the drill's copy), with the hash in line and on its own goroutine.
// `go test -run '^$' -bench HashAndCopy ./verifier/` on the bench machine
// (2 CPUs): see README's Performance section.
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
