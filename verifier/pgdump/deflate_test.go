package pgdump

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/adler32"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	kflate "github.com/klauspost/compress/flate"
	kzlib "github.com/klauspost/compress/zlib"
)

// refInflate is the zlib reader the native reader used before its own
// decoder: klauspost/compress's flate, the same header, checksum and
// trailing-data rules. It is the reference the decoder is held to.
func refInflate(src []byte) ([]byte, error) {
	in := bufio.NewReader(bytes.NewReader(src))
	var b [4]byte
	if _, err := io.ReadFull(in, b[:2]); err != nil {
		return nil, err
	}
	if b[0]&0x0f != 8 || b[0]>>4 > 7 || binary.BigEndian.Uint16(b[:2])%31 != 0 || b[1]&0x20 != 0 {
		return nil, kzlib.ErrHeader
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, kflate.NewReader(in)); err != nil {
		return out.Bytes(), err
	}
	if _, err := io.ReadFull(in, b[:4]); err != nil {
		return out.Bytes(), err
	}
	if binary.BigEndian.Uint32(b[:4]) != adler32.Checksum(out.Bytes()) {
		return out.Bytes(), kzlib.ErrChecksum
	}
	if in.Buffered() > 0 {
		return out.Bytes(), errors.New("data after the end")
	}
	return out.Bytes(), nil
}

// teeSum is an adler32 that also keeps what it sums.
type teeSum struct {
	hash.Hash32
	out *bytes.Buffer
}

func (t teeSum) Write(p []byte) (int, error) {
	t.out.Write(p)
	return t.Hash32.Write(p)
}

// oneByte hands out its input a byte at a time, so that every read of the
// decoder's input near a boundary is exercised.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// ownInflate runs the decoder on src (with f, reused) and returns what it
// inflated.
func ownInflate(f *inflater, src io.Reader) ([]byte, error) {
	var out bytes.Buffer
	f.sum = teeSum{adler32.New(), &out}
	n, err := f.inflate(src)
	if err == nil && n != int64(out.Len()) {
		return out.Bytes(), fmt.Errorf("inflate says %d bytes, summed %d", n, out.Len())
	}
	return out.Bytes(), err
}

// sameVerdict fails t unless the decoder and the reference agree on stream:
// both refuse it, or both give the same bytes.
func sameVerdict(t testing.TB, f *inflater, name string, stream []byte) {
	t.Helper()
	for _, bytewise := range []bool{false, true} {
		var src io.Reader = bytes.NewReader(stream)
		if bytewise {
			src = oneByte{src}
		}
		got, err := ownInflate(f, src)
		want, refErr := refInflate(stream)
		switch {
		case (err == nil) != (refErr == nil):
			t.Fatalf("%s (bytewise %v): decoder says %v, reference %v", name, bytewise, err, refErr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("%s (bytewise %v): %d bytes inflated differ from the reference's %d", name, bytewise, len(got), len(want))
		}
	}
}

// corpus is zlib streams of what a dump's COPY data looks like and of what
// exercises the decoder: stored, fixed and dynamic blocks, long and
// overlapping matches, an empty stream, each from Go's two compressors.
func corpus(tb testing.TB) map[string][]byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 70000)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	var rows bytes.Buffer
	for i := range 3000 {
		fmt.Fprintf(&rows, "%d\tlead %d\tc%d@example.com\t2024-01-%02d 10:%02d:00+00\t\\N\n", i, i%97, i, 1+i%28, i%60)
	}
	runs := bytes.Repeat([]byte("a"), 5000)
	for period := 2; period < 10; period++ {
		runs = append(runs, bytes.Repeat([]byte("0123456789")[:period], 400)...)
	}
	data := map[string][]byte{
		"empty":  nil,
		"byte":   {'x'},
		"random": random,
		"hex":    []byte(hex.EncodeToString(random[:40000])),
		"rows":   rows.Bytes(),
		"runs":   runs,
	}
	out := map[string][]byte{}
	for name, d := range data {
		for _, level := range []int{zlib.NoCompression, zlib.BestSpeed, zlib.DefaultCompression, zlib.BestCompression, zlib.HuffmanOnly} {
			var b, kb bytes.Buffer
			w, _ := zlib.NewWriterLevel(&b, level)
			w.Write(d)
			w.Close()
			out[fmt.Sprintf("%s/go%d", name, level)] = b.Bytes()
			kw, _ := kzlib.NewWriterLevel(&kb, level)
			kw.Write(d)
			kw.Close()
			out[fmt.Sprintf("%s/kp%d", name, level)] = kb.Bytes()
		}
	}
	return out
}

// TestInflateMatchesReference: on every stream of the corpus the decoder
// gives the bytes the reference gives, fed in one piece or a byte at a time.
func TestInflateMatchesReference(t *testing.T) {
	f := newInflater()
	for name, s := range corpus(t) {
		if _, err := refInflate(s); err != nil {
			t.Fatalf("%s: the reference refuses it: %v", name, err)
		}
		sameVerdict(t, f, name, s)
	}
}

// TestInflateEveryCutAndFlip: every truncation of small streams, and every
// one-bit flip of them, gets the reference's verdict: refused by both, or
// the same bytes from both.
func TestInflateEveryCutAndFlip(t *testing.T) {
	f := newInflater()
	c := corpus(t)
	for _, name := range []string{"byte/go6", "rows/go1", "rows/kp1", "hex/go-2", "runs/go9", "random/go0"} {
		s := c[name]
		if len(s) > 1200 {
			s = cutStream(t, name, c)
		}
		for i := range len(s) {
			sameVerdict(t, f, fmt.Sprintf("%s cut at %d", name, i), s[:i])
			for bit := range 8 {
				m := bytes.Clone(s)
				m[i] ^= 1 << bit
				sameVerdict(t, f, fmt.Sprintf("%s bit %d of byte %d flipped", name, bit, i), m)
			}
		}
	}
}

// cutStream compresses the start of a corpus entry's data again, small
// enough for every flip: the stream keeps its kind of blocks.
func cutStream(t *testing.T, name string, c map[string][]byte) []byte {
	full, err := refInflate(c[name])
	if err != nil {
		t.Fatal(err)
	}
	level := map[string]int{"rows/go1": 1, "rows/kp1": 1, "hex/go-2": -2, "runs/go9": 9, "random/go0": 0}[name]
	var b bytes.Buffer
	w, _ := zlib.NewWriterLevel(&b, level)
	w.Write(full[:min(len(full), 900)])
	w.Close()
	return b.Bytes()
}

// FuzzInflate holds the decoder to the reference on arbitrary streams,
// seeded with the corpus.
func FuzzInflate(f *testing.F) {
	for _, s := range corpus(f) {
		if len(s) < 4096 {
			f.Add(s)
		}
	}
	dec := newInflater()
	f.Fuzz(func(t *testing.T, s []byte) {
		sameVerdict(t, dec, "input", s)
	})
}

// BenchmarkInflate: the decoder against the reference on one zlib stream,
// BACKUPVERIFY_BENCH_ZLIB (a file holding one) or the corpus's hex.
func BenchmarkInflate(b *testing.B) {
	s := corpus(b)["hex/go-1"]
	if p := os.Getenv("BACKUPVERIFY_BENCH_ZLIB"); p != "" {
		var err error
		if s, err = os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	}
	out, _ := refInflate(s)
	b.Run("native", func(b *testing.B) {
		f := newInflater()
		b.SetBytes(int64(len(out)))
		for b.Loop() {
			if _, err := f.inflate(bytes.NewReader(s)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("klauspost", func(b *testing.B) {
		b.SetBytes(int64(len(out)))
		for b.Loop() {
			r, _ := kzlib.NewReader(bytes.NewReader(s))
			if _, err := io.Copy(io.Discard, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
