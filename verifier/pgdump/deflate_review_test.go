package pgdump

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"io"
	"math/bits"
	"math/rand/v2"
	"testing"

	kzlib "github.com/klauspost/compress/zlib"
)

// bitW packs DEFLATE bits, first bit lowest.
type bitW struct {
	buf  []byte
	acc  uint64
	nacc uint
}

func (w *bitW) put(v uint64, n uint) {
	w.acc |= v << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

// putCode writes a Huffman code MSB-first.
func (w *bitW) putCode(code uint32, n uint8) {
	w.put(uint64(bits.Reverse32(code)>>(32-n)), uint(n))
}

func (w *bitW) align() {
	if w.nacc > 0 {
		w.put(0, 8-w.nacc)
	}
}

func canon(lens []uint8) []uint32 {
	var count [16]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	var next [16]uint32
	code := uint32(0)
	for l := 1; l <= 15; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}
	codes := make([]uint32, len(lens))
	for i, l := range lens {
		if l != 0 {
			codes[i] = next[l]
			next[l]++
		}
	}
	return codes
}

// randomLens makes a complete code over k of n symbols, depths up to maxd,
// by splitting random leaves; must contains symbols forced in.
func randomLens(r *rand.Rand, n, k int, maxd uint8, must []int) []uint8 {
	depths := []uint8{0}
	for len(depths) < k {
		i := r.IntN(len(depths))
		if r.IntN(3) == 0 {
			// prefer deep ones to get long codes
			best := i
			for j := 0; j < 4; j++ {
				c := r.IntN(len(depths))
				if depths[c] > depths[best] && depths[c] < maxd {
					best = c
				}
			}
			i = best
		}
		if depths[i] >= maxd {
			ok := false
			for j := range depths {
				if depths[j] < maxd {
					i, ok = j, true
					break
				}
			}
			if !ok {
				break
			}
		}
		d := depths[i] + 1
		depths[i] = d
		depths = append(depths, d)
	}
	lens := make([]uint8, n)
	perm := r.Perm(n)
	// place must-symbols first
	used := map[int]bool{}
	idx := 0
	for _, m := range must {
		if idx < len(depths) {
			lens[m] = depths[idx]
			used[m] = true
			idx++
		}
	}
	for _, p := range perm {
		if idx >= len(depths) {
			break
		}
		if used[p] {
			continue
		}
		lens[p] = depths[idx]
		idx++
	}
	return lens
}

type gen struct {
	r    *rand.Rand
	w    bitW
	out  []byte
	bad  bool // a deliberate flaw was planted
	note string
}

func (g *gen) writeLenCodes(all []uint8) {
	// code-length code
	var cl []uint8
	var seq []int // symbols
	var extra []int
	for i := 0; i < len(all); {
		v := all[i]
		run := 1
		for i+run < len(all) && all[i+run] == v {
			run++
		}
		switch {
		case v == 0 && run >= 11 && g.r.IntN(2) == 0:
			k := min(run, 138)
			seq, extra = append(seq, 18), append(extra, k-11)
			i += k
		case v == 0 && run >= 3 && g.r.IntN(2) == 0:
			k := min(run, 10)
			seq, extra = append(seq, 17), append(extra, k-3)
			i += k
		case i > 0 && all[i-1] == v && run >= 3 && g.r.IntN(2) == 0:
			k := min(run, 6)
			seq, extra = append(seq, 16), append(extra, k-3)
			i += k
		default:
			seq, extra = append(seq, int(v)), append(extra, 0)
			i++
		}
	}
	usedSyms := map[int]bool{}
	for _, s := range seq {
		usedSyms[s] = true
	}
	var must []int
	for s := range 19 {
		if usedSyms[s] {
			must = append(must, s)
		}
	}
	k := len(must)
	if k < 2 {
		k = 2
	}
	k += g.r.IntN(19 - k + 1)
	cl = randomLens(g.r, 19, k, 7, must)
	if g.r.IntN(40) == 0 {
		// single code of length 1 in the code-length code (refused)
		g.bad = true
		g.note += "cl-single "
	}
	ncode := 19
	for ncode > 4 && cl[codeOrder[ncode-1]] == 0 {
		ncode--
	}
	g.w.put(uint64(ncode-4), 4)
	for i := range ncode {
		g.w.put(uint64(cl[codeOrder[i]]), 3)
	}
	codes := canon(cl)
	for i, s := range seq {
		g.w.putCode(codes[s], cl[s])
		switch s {
		case 16:
			g.w.put(uint64(extra[i]), 2)
		case 17:
			g.w.put(uint64(extra[i]), 3)
		case 18:
			g.w.put(uint64(extra[i]), 7)
		}
	}
}

func (g *gen) emitLit(b byte, lc []uint32, ll []uint8) {
	g.w.putCode(lc[b], ll[b])
	g.out = append(g.out, b)
}

func lenSym(length int) (sym int, extra int, nx uint) {
	for i := 28; i >= 0; i-- {
		if int(lenBase[i]) <= length {
			if i == 28 && length != 258 {
				continue
			}
			return 257 + i, length - int(lenBase[i]), uint(lenExtra[i])
		}
	}
	panic("len")
}

func distSym(d int) (int, int, uint) {
	for i := 29; i >= 0; i-- {
		if int(distBase[i]) <= d {
			return i, d - int(distBase[i]), uint(distExtra[i])
		}
	}
	panic("dist")
}

// huffBlock writes symbols with the given tables; the lit table must hold
// every byte value used and the length symbols used, the dist table the
// distances. It only uses symbols present.
func (g *gen) huffBlock(ll, dl []uint8) {
	lc, dc := canon(ll), canon(dl)
	var lits []int
	for s := 0; s < 256; s++ {
		if ll[s] != 0 {
			lits = append(lits, s)
		}
	}
	n := g.r.IntN(3000)
	if g.r.IntN(8) == 0 {
		n = 40000 + g.r.IntN(120000)
	}
	for i := 0; i < n; i++ {
		if len(lits) > 0 && (g.r.IntN(3) == 0 || len(g.out) == 0) {
			g.emitLit(byte(lits[g.r.IntN(len(lits))]), lc, ll)
			continue
		}
		if len(g.out) == 0 {
			break
		}
		// a match whose length and dist symbols exist
		var length int
		switch g.r.IntN(4) {
		case 0:
			length = 258
		case 1:
			length = 3 + g.r.IntN(10)
		default:
			length = 3 + g.r.IntN(256)
		}
		ls, lx, lnx := lenSym(length)
		if ls >= len(ll) || ll[ls] == 0 {
			continue
		}
		var d int
		switch g.r.IntN(5) {
		case 0:
			d = 1 + g.r.IntN(8)
		case 1:
			d = min(len(g.out), 32768)
		case 2:
			d = min(len(g.out), 32768-g.r.IntN(300))
		default:
			d = 1 + g.r.IntN(min(len(g.out), 32768))
		}
		d = max(1, min(d, len(g.out)))
		if g.r.IntN(300) == 0 && len(g.out) < 32768 {
			d = len(g.out) + 1
			g.bad = true
			g.note += "toofar "
		}
		ds, dx, dnx := distSym(d)
		if ds >= len(dl) || dl[ds] == 0 {
			continue
		}
		g.w.putCode(lc[ls], ll[ls])
		g.w.put(uint64(lx), lnx)
		g.w.putCode(dc[ds], dl[ds])
		g.w.put(uint64(dx), dnx)
		for k := 0; k < length; k++ {
			if d > len(g.out) {
				g.out = append(g.out, 0)
			} else {
				g.out = append(g.out, g.out[len(g.out)-d])
			}
		}
	}
	g.w.putCode(lc[256], ll[256])
}

func (g *gen) dynamicBlock(final bool) {
	g.w.put(b2u(final), 1)
	g.w.put(2, 2)
	nlen := 257 + g.r.IntN(30)
	ndist := 1 + g.r.IntN(30)
	k := min(nlen, 2+g.r.IntN(nlen-1))
	ll := randomLens(g.r, nlen, k, 15, []int{256})
	var dl []uint8
	switch g.r.IntN(10) {
	case 0: // no distance codes
		dl = make([]uint8, ndist)
	case 1: // a single distance code of length 1
		dl = make([]uint8, ndist)
		dl[g.r.IntN(ndist)] = 1
	default:
		dl = randomLens(g.r, ndist, min(ndist, 2+g.r.IntN(ndist)), 15, nil)
		if ndist == 1 {
			dl = []uint8{1}
		}
	}
	// flaws
	switch g.r.IntN(30) {
	case 0: // over-subscribe lit
		for i := range ll {
			if ll[i] == 0 {
				ll[i] = 15
				g.bad = true
				g.note += "over-lit "
				break
			}
		}
	case 1: // incomplete lit: drop a longest code (not 256)
		mx, at := uint8(0), -1
		for i, l := range ll {
			if i != 256 && l > mx {
				mx, at = l, i
			}
		}
		if at >= 0 && mx > 1 {
			ll[at] = 0
			g.bad = true
			g.note += "incomplete-lit "
		}
	case 2: // incomplete dist
		mx, at := uint8(0), -1
		for i, l := range dl {
			if l > mx {
				mx, at = l, i
			}
		}
		if at >= 0 && mx > 1 {
			dl[at] = 0
			g.bad = true
			g.note += "incomplete-dist "
		}
	}
	g.w.put(uint64(nlen-257), 5)
	g.w.put(uint64(ndist-1), 5)
	all := append(append([]uint8{}, ll...), dl...)
	g.writeLenCodes(all)
	if g.bad {
		// the rest is noise; the stream is refused anyway
		g.huffBlockSafe(ll, dl)
		return
	}
	g.huffBlock(ll, dl)
}

// huffBlockSafe writes a few literals with a possibly bad code (canon works
// on any lengths) and an EOB.
func (g *gen) huffBlockSafe(ll, dl []uint8) {
	lc := canon(ll)
	for i := 0; i < 20; i++ {
		s := g.r.IntN(256)
		if ll[s] != 0 {
			g.emitLit(byte(s), lc, ll)
		}
	}
	g.w.putCode(lc[256], ll[256])
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// fixedLL and fixedDL are the fixed codes' lengths, distances 30 and 31
// (no distance) left out.
var fixedLL, fixedDL = func() ([]uint8, []uint8) {
	l, d := fixedLengths()
	return l[:], d[:30]
}()

func (g *gen) fixedBlock(final bool) {
	g.w.put(b2u(final), 1)
	g.w.put(1, 2)
	g.huffBlock(fixedLL, fixedDL)
}

func (g *gen) storedBlock(final bool) {
	g.w.put(b2u(final), 1)
	n := g.r.IntN(300)
	if g.r.IntN(3) == 0 {
		n = 65535 - g.r.IntN(4)
	}
	g.storedBody(n)
}

// storedBody writes a stored block's type, its lengths and n random bytes.
func (g *gen) storedBody(n int) {
	g.w.put(0, 2)
	g.w.align()
	g.w.put(uint64(n), 16)
	g.w.put(uint64(^uint16(n)), 16)
	for range n {
		b := byte(g.r.IntN(256))
		g.w.put(uint64(b), 8)
		g.out = append(g.out, b)
	}
}

func genStream(seed uint64) (stream []byte, out []byte, bad bool, note string) {
	g := &gen{r: rand.New(rand.NewPCG(seed, 7))}
	g.w.buf = []byte{0x78, 0x9c}
	nblocks := 1 + g.r.IntN(8)
	for i := range nblocks {
		final := i == nblocks-1
		switch g.r.IntN(4) {
		case 0:
			g.storedBlock(final)
		case 1:
			g.fixedBlock(final)
		default:
			g.dynamicBlock(final)
		}
	}
	g.w.align()
	var tr [4]byte
	binary.BigEndian.PutUint32(tr[:], adler32.Checksum(g.out))
	g.w.buf = append(g.w.buf, tr[:]...)
	return g.w.buf, g.out, g.bad, g.note
}

type chunky struct {
	r  *bytes.Reader
	rn *rand.Rand
}

func (c chunky) Read(p []byte) (int, error) {
	k := 1 + c.rn.IntN(13)
	if c.rn.IntN(4) == 0 {
		k = 1 + c.rn.IntN(70000)
	}
	if len(p) > k {
		p = p[:k]
	}
	return c.r.Read(p)
}

// TestInflateGeneratedStreams: streams of random stored, fixed and dynamic
// blocks (codes up to 15 bits, matches at the window's reach, outputs past
// the window's slide, planted flaws) get the generator's bytes and the
// reference's verdict, read whole, a byte at a time and in odd pieces.
func TestInflateGeneratedStreams(t *testing.T) {
	f := newInflater()
	n := 150
	if testing.Short() {
		n = 30
	}
	for seed := uint64(0); seed < uint64(n); seed++ {
		s, want, bad, note := genStream(seed)
		ref, refErr := refInflate(s)
		for mode := 0; mode < 3; mode++ {
			var src io.Reader = bytes.NewReader(s)
			switch mode {
			case 1:
				src = oneByte{src}
			case 2:
				src = chunky{bytes.NewReader(s), rand.New(rand.NewPCG(seed, 9))}
			}
			got, err := ownInflate(f, src)
			if (err == nil) != (refErr == nil) {
				t.Errorf("seed %d mode %d (%s): own %v ref %v", seed, mode, note, err, refErr)
			}
			if err == nil && !bytes.Equal(got, ref) {
				t.Errorf("seed %d mode %d: output differs from ref", seed, mode)
			}
			if !bad && err != nil {
				t.Errorf("seed %d mode %d: good stream refused: %v", seed, mode, err)
			}
			if !bad && err == nil && !bytes.Equal(got, want) {
				t.Errorf("seed %d: output differs from generator", seed)
			}
		}
	}
}

// errReader returns its data, then a non-EOF error.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

var errBoom = errors.New("boom: disk read failed")

// TestInflateKeepsSourceError: a source failing at every cut of a stream must
// come back as the source's error, not as corruption or io.ErrUnexpectedEOF.
func TestInflateKeepsSourceError(t *testing.T) {
	f := newInflater()
	c := corpus(t, 900)
	wrong := 0
	defer func() {
		if wrong > 0 {
			t.Errorf("%d cuts in all came back without the source's error", wrong)
		}
	}()
	for _, name := range []string{"rows/go1", "hex/go-2", "runs/go9", "rows/go9", "byte/go6", "random/go0"} {
		s := c[name]
		for i := range len(s) {
			for _, bytewise := range []bool{false, true} {
				var r io.Reader = bytes.NewReader(s[:i])
				if bytewise {
					r = oneByte{r}
				}
				_, err := ownInflate(f, &errReader{r, errBoom})
				if !errors.Is(err, errBoom) {
					if wrong++; wrong <= 3 {
						t.Errorf("%s cut at %d of %d (bytewise %v): %v, not the source's error", name, i, len(s), bytewise, err)
					}
				}
			}
		}
	}
}

// ladderLens gives syms lengths 1, 2, ..., 14, 15, 15 in order: a complete
// code whose longest codes are 15 bits.
func ladderLens(n int, syms []int) []uint8 {
	l := make([]uint8, n)
	for i, s := range syms {
		l[s] = uint8(min(i+1, 15))
	}
	return l
}

// TestInflateLongestCodes: 15-bit literal/length and distance codes, the
// 48-bit pair (length 258, distance 32768) across the window slide.
func TestInflateLongestCodes(t *testing.T) {
	f := newInflater()
	for variant := range 8 {
		g := &gen{r: rand.New(rand.NewPCG(uint64(variant), 3))}
		g.w.buf = []byte{0x78, 0x9c}
		// history first: a stored block
		g.w.put(0, 1)
		g.storedBody(40000 + variant)
		// lit: 16 symbols on a ladder, the longest ones the match and EOB
		litSyms := []int{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 284, 256}
		if variant&1 == 1 {
			litSyms[0], litSyms[14] = litSyms[14], litSyms[0]
		}
		ll := ladderLens(286, litSyms)
		distSyms := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 28, 29}
		if variant&2 == 2 {
			distSyms[0], distSyms[15] = distSyms[15], distSyms[0]
		}
		dl := ladderLens(30, distSyms)
		g.w.put(1, 1)
		g.w.put(2, 2)
		g.w.put(286-257, 5)
		g.w.put(30-1, 5)
		g.writeLenCodes(append(append([]uint8{}, ll...), dl...))
		lc, dc := canon(ll), canon(dl)
		for i := 0; i < 3000; i++ {
			switch g.r.IntN(4) {
			case 0:
				g.emitLit(byte('a'+g.r.IntN(14)), lc, ll)
			default:
				d := 32768
				if variant&4 == 4 {
					d = 1 + g.r.IntN(8)
				}
				if d > len(g.out) {
					d = len(g.out)
				}
				ds, dx, dnx := distSym(d)
				if dl[ds] == 0 {
					ds, dx, dnx = 29, 32768-24577, 13
					d = 32768
				}
				g.w.putCode(lc[284], ll[284])
				g.w.put(31, 5)
				g.w.putCode(dc[ds], dl[ds])
				g.w.put(uint64(dx), dnx)
				for range 258 {
					g.out = append(g.out, g.out[len(g.out)-d])
				}
			}
		}
		g.w.putCode(lc[256], ll[256])
		g.w.align()
		var tr [4]byte
		binary.BigEndian.PutUint32(tr[:], adler32.Checksum(g.out))
		s := append(g.w.buf, tr[:]...)
		got, err := ownInflate(f, bytes.NewReader(s))
		if err != nil || !bytes.Equal(got, g.out) {
			t.Errorf("variant %d: %v (%d of %d bytes)", variant, err, len(got), len(g.out))
		}
		sameVerdict(t, f, fmt.Sprint("ladder ", variant), s)
	}
}

// stutter returns (0, nil) before every read that gives data: "nothing
// happened" (io.Reader), not the end of the input.
type stutter struct {
	r    io.Reader
	skip bool
}

func (s *stutter) Read(p []byte) (int, error) {
	s.skip = !s.skip
	if s.skip {
		return 0, nil
	}
	return s.r.Read(p)
}

// TestInflateZeroByteReads: a read of (0, nil) means nothing happened
// (io.Reader), not the end of the input; the reference, over bufio, retries.
func TestInflateZeroByteReads(t *testing.T) {
	f := newInflater()
	c := corpus(t)
	for _, name := range []string{"rows/go1", "random/go0", "empty/go-1", "hex/go9"} {
		s := c[name]
		want, refErr := refInflate(s)
		if refErr != nil {
			t.Fatal(refErr)
		}
		// the reference reads through a bufio.Reader, which retries
		var out bytes.Buffer
		r, _ := kzlib.NewReader(&stutter{r: bytes.NewReader(s)})
		if _, err := io.Copy(&out, r); err != nil || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("%s: the reference over (0, nil) reads: %v", name, err)
		}
		got, err := ownInflate(f, &stutter{r: bytes.NewReader(s)})
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: a valid stream read with (0, nil) reads in between: %v", name, err)
		}
	}
}

// TestInflateTrailingBytes: any byte after a valid stream is refused, however
// the input is cut.
func TestInflateTrailingBytes(t *testing.T) {
	f := newInflater()
	for seed := uint64(0); seed < 60; seed++ {
		s, _, _, _ := genStream(seed)
		if _, err := refInflate(s); err != nil {
			continue
		}
		for extra := 1; extra <= 17; extra++ {
			m := append(bytes.Clone(s), make([]byte, extra)...)
			for _, r := range []io.Reader{bytes.NewReader(m), oneByte{bytes.NewReader(m)}, chunky{bytes.NewReader(m), rand.New(rand.NewPCG(seed, uint64(extra)))}} {
				if _, err := ownInflate(f, r); err == nil {
					t.Errorf("seed %d + %d bytes: accepted", seed, extra)
				}
			}
		}
	}
}
