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
	"os/exec"
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

// corpusData is what a dump's COPY data looks like and what exercises the
// decoder: incompressible bytes, hex, rows of text, runs and short periods
// (overlapping matches), nothing at all.
func corpusData() map[string][]byte {
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
	return map[string][]byte{
		"empty":  nil,
		"byte":   {'x'},
		"random": random,
		"hex":    []byte(hex.EncodeToString(random[:40000])),
		"rows":   rows.Bytes(),
		"runs":   runs,
	}
}

// corpus is corpusData compressed by Go's two zlib writers at every level
// (stored, fixed and dynamic blocks), each of the first max bytes of it
// when max > 0.
func corpus(tb testing.TB, max ...int) map[string][]byte {
	out := map[string][]byte{}
	for name, d := range corpusData() {
		if len(max) > 0 && len(d) > max[0] {
			d = d[:max[0]]
		}
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

// TestInflateEveryCutAndFlip: every truncation, and every one-bit flip, of
// streams of the first 900 bytes of the corpus's data in each kind of block
// gets the reference's verdict: refused by both, or the same bytes from both.
func TestInflateEveryCutAndFlip(t *testing.T) {
	f := newInflater()
	c := corpus(t, 900)
	for _, name := range []string{"byte/go6", "rows/go1", "rows/kp1", "hex/go-2", "runs/go9", "random/go0", "rows/kp9"} {
		s := c[name]
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

// cZlibVerdicts is a Python program that prints, for each length-prefixed
// stream on stdin, 1 if C zlib inflates it whole (to its end, nothing after
// it) and 0 if not.
const cZlibVerdicts = `
import sys, zlib, struct
d = sys.stdin.buffer.read()
i, out = 0, []
while i < len(d):
    (n,) = struct.unpack('<I', d[i:i+4]); s = d[i+4:i+4+n]; i += 4 + n
    try:
        o = zlib.decompressobj(); o.decompress(s); ok = o.eof and not o.unused_data
    except zlib.error:
        ok = False
    out.append('1' if ok else '0')
sys.stdout.write(''.join(out))
`

// TestInflateMatchesCZlib: on 50,000 streams of the corpus (its data's
// first 1,500 bytes) with bits flipped or cut short, the decoder refuses what C zlib (the zlib pg_restore
// links) refuses and accepts what it accepts. It needs python3, whose zlib
// module is C zlib.
func TestInflateMatchesCZlib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	rnd := rand.New(rand.NewPCG(7, 8))
	var seeds [][]byte
	for _, s := range corpus(t, 1500) {
		seeds = append(seeds, s)
	}
	f := newInflater()
	var in bytes.Buffer
	var ours []byte
	for range 50000 {
		s := bytes.Clone(seeds[rnd.IntN(len(seeds))])
		if rnd.IntN(4) == 0 {
			s = s[:rnd.IntN(len(s)+1)]
		} else {
			for range 1 + rnd.IntN(3) {
				if len(s) > 2 {
					s[2+rnd.IntN(len(s)-2)] ^= 1 << rnd.IntN(8)
				}
			}
		}
		verdict := byte('1')
		if _, err := ownInflate(f, bytes.NewReader(s)); err != nil {
			verdict = '0'
		}
		ours = append(ours, verdict)
		in.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(s))))
		in.Write(s)
	}
	cmd := exec.Command(py, "-c", cZlibVerdicts)
	cmd.Stdin = &in
	theirs, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	if len(theirs) != len(ours) {
		t.Fatalf("python3 gave %d verdicts for %d streams", len(theirs), len(ours))
	}
	accepted := 0
	for i := range ours {
		if ours[i] != theirs[i] {
			t.Errorf("stream %d: ours %c, C zlib %c", i, ours[i], theirs[i])
		}
		if ours[i] == '1' {
			accepted++
		}
	}
	t.Logf("%d streams, %d accepted by both", len(ours), accepted)
}

// oneLiteral is a zlib stream of "a" in one dynamic block declaring nlen
// literal/length and ndist distance code lengths: 'a' and end-of-block of
// one bit each, every other length 0, sent with the code-length symbols 18
// (code 0), 0 (10) and 1 (11).
func oneLiteral(nlen, ndist int) []byte {
	w := &bitW{buf: []byte{0x78, 0x9c}}
	w.put(1, 1) // final
	w.put(2, 2) // dynamic
	w.put(uint64(nlen-257), 5)
	w.put(uint64(ndist-1), 5)
	w.put(18-4, 4) // lengths for codeOrder's first 18 symbols, up to symbol 1
	for _, sym := range codeOrder[:18] {
		w.put(map[uint8]uint64{18: 1, 0: 2, 1: 2}[sym], 3)
	}
	zeros := func(n int) {
		for ; n >= 11; n -= min(n, 138) {
			w.put(0, 1) // 18: 11-138 zeros
			w.put(uint64(min(n, 138)-11), 7)
		}
		for ; n > 0; n-- {
			w.put(1, 1) // 0, code 10 sent first bit first
			w.put(0, 1)
		}
	}
	one := func() { w.put(3, 2) } // 1, code 11
	zeros('a')
	one() // 'a'
	zeros(256 - 'a' - 1)
	one() // end of block
	zeros(nlen - 257 + ndist)
	w.put(0, 1) // 'a'
	w.put(1, 1) // end of block
	w.align()
	return binary.BigEndian.AppendUint32(w.buf, adler32.Checksum([]byte("a")))
}

// TestInflateSymbolCounts: a dynamic block may declare at most 286
// literal/length and 30 distance codes, as zlib says ("too many length or
// distance symbols"), even when the ones past those have no code.
func TestInflateSymbolCounts(t *testing.T) {
	f := newInflater()
	for _, c := range []struct {
		nlen, ndist int
		ok          bool
	}{{257, 1, true}, {286, 30, true}, {287, 1, false}, {288, 1, false}, {286, 31, false}, {286, 32, false}} {
		s := oneLiteral(c.nlen, c.ndist)
		out, err := ownInflate(f, bytes.NewReader(s))
		if (err == nil) != c.ok || (c.ok && string(out) != "a") {
			t.Errorf("%d literal/length and %d distance codes: %q, %v; want ok %v", c.nlen, c.ndist, out, err, c.ok)
		}
		sameVerdict(t, f, fmt.Sprintf("%d/%d codes", c.nlen, c.ndist), s)
	}
}
