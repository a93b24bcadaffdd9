package pgdump

import (
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
)

// A DEFLATE decoder (RFC 1951) for the verify pass, which inflates every
// compressed byte of every archive and keeps nothing but the adler32 of the
// output. The field's Go decoders take one byte at a time from an
// io.ByteReader; this one loads 8 input bytes into a 64-bit bit buffer at
// once (the refill zlib's inflate_fast and libdeflate use), so that a whole
// length/distance pair decodes without another load, and looks codes up in
// tables of 2^10 (literal/length) and 2^8 (distance) entries, with
// second-level tables for the longer codes.
//
// It accepts and rejects what zlib (which pg_restore runs) accepts and
// rejects, messages aside; deflate_test.go holds it to the Go decoder the
// reader used before, on every cut and bit flip of a corpus and by fuzzing.
// Their rules differ in one place, which decides no verdict: a code-length
// code of a single 1-bit code, refused here as by zlib, accepted by Go's
// decoders, gives every length the same value, and no such set of lengths
// is a valid literal/length code.

// Table entries: bits 0-4 the bits the entry consumes, 8-11 its extra bits
// (a length or distance), a second-level table's bits, or how many
// literals it holds (1 or 2), 12-15 its kind, 16-31 its value (the
// literals, first lowest; a base length or distance; a table offset).
const (
	kindBad uint32 = iota << 12 // no code: a corrupt stream
	kindLit
	kindLen
	kindEOB
	kindSub
	kindDist
	kindSym // a code-length symbol (0-18)

	kindMask = 0xf << 12
)

const (
	litBits  = 10
	distBits = 8
	lenBits  = 7 // the code-length code: 19 symbols of at most 7 bits

	litTableSize  = 1<<litBits + 288<<(15-litBits)
	distTableSize = 1<<distBits + 32<<(15-distBits)

	maxMatch = 258
	winHist  = 1 << 15
	winSize  = winHist + 256<<10
)

var (
	errBlockType  = errors.New("invalid block type")
	errStoredLen  = errors.New("invalid stored block lengths")
	errSymbols    = errors.New("too many length or distance symbols")
	errCodeLens   = errors.New("invalid code lengths set")
	errRepeat     = errors.New("invalid bit length repeat")
	errMissingEOB = errors.New("invalid code -- missing end-of-block")
	errLitLenSet  = errors.New("invalid literal/lengths set")
	errDistSet    = errors.New("invalid distances set")
	errCode       = errors.New("invalid literal/length or distance code")
	errDistTooFar = errors.New("invalid distance too far back")
)

var (
	lenBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}

	distBase = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
		1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}

	// The order the code-length code's lengths come in.
	codeOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

	fixedLit  [litTableSize]uint32
	fixedDist [distTableSize]uint32
)

// fixedLengths are the code lengths of the fixed codes (RFC 1951 3.2.6).
func fixedLengths() (lit [288]uint8, dist [32]uint8) {
	for i := range lit {
		switch {
		case i < 144:
			lit[i] = 8
		case i < 256:
			lit[i] = 9
		case i < 280:
			lit[i] = 7
		default:
			lit[i] = 8
		}
	}
	for i := range dist {
		dist[i] = 5
	}
	return lit, dist
}

func init() {
	lit, dist := fixedLengths()
	var scratch [1 << litBits]uint8
	// Symbols 286 and 287, and distances 30 and 31, take code space in
	// the fixed codes but are no length or distance: kindBad.
	buildTable(fixedLit[:], litBits, lit[:], litEntry, false, &scratch)
	buildTable(fixedDist[:], distBits, dist[:], distEntry, false, &scratch)
}

func litEntry(sym int) uint32 {
	switch {
	case sym < 256:
		return kindLit | 1<<8 | uint32(sym)<<16
	case sym == 256:
		return kindEOB
	case sym < 286:
		return kindLen | uint32(lenExtra[sym-257])<<8 | uint32(lenBase[sym-257])<<16
	}
	return kindBad
}

func distEntry(sym int) uint32 {
	if sym < 30 {
		return kindDist | uint32(distExtra[sym])<<8 | uint32(distBase[sym])<<16
	}
	return kindBad
}

func symEntry(sym int) uint32 { return kindSym | uint32(sym)<<16 }

// buildTable fills t with the canonical Huffman code of lens (RFC 1951
// 3.2.2): 2^pb first-level entries, then second-level tables. It returns
// false for a set of lengths zlib refuses: over-subscribed, or incomplete
// but for a single code of length 1 (not even that for the code-length
// code, codeLens). A set with no codes builds a table of kindBad entries:
// zlib, too, fails such a code only when it is used.
func buildTable(t []uint32, pb uint, lens []uint8, entry func(int) uint32, codeLens bool, longest *[1 << litBits]uint8) bool {
	var count [16]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	maxLen := 15
	for maxLen > 0 && count[maxLen] == 0 {
		maxLen--
	}
	primary := t[:1<<pb]
	left := 1
	for l := 1; l <= 15; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return false
		}
	}
	if maxLen == 0 || left > 0 {
		if maxLen != 0 && (codeLens || maxLen != 1) {
			return false
		}
		clear(primary)
	}
	var next [16]int
	code := 0
	for l := 1; l <= 15; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	// The longest code behind each first-level entry sizes its table.
	long := longest[:1<<pb]
	clear(long)
	codes := next
	for _, l := range lens {
		if uint(l) > pb {
			r := bits.Reverse16(uint16(codes[l])) >> (16 - l)
			codes[l]++
			p := r & (1<<pb - 1)
			long[p] = max(long[p], l)
		}
	}
	off := uint32(1 << pb)
	for p, l := range long {
		if l != 0 {
			sub := uint32(l) - uint32(pb)
			primary[p] = kindSub | sub<<8 | off<<16 | uint32(pb)
			off += 1 << sub
		}
	}
	for sym, l := range lens {
		if l == 0 {
			continue
		}
		r := uint32(bits.Reverse16(uint16(next[l])) >> (16 - l))
		next[l]++
		e := entry(sym)
		if uint(l) <= pb {
			for i := r; i < 1<<pb; i += 1 << l {
				primary[i] = e | uint32(l)
			}
			continue
		}
		link := primary[r&(1<<pb-1)]
		sub := t[link>>16 : link>>16+1<<(link>>8&0xf)]
		for i := r >> pb; i < uint32(len(sub)); i += 1 << (uint(l) - pb) {
			sub[i] = e | (uint32(l) - uint32(pb))
		}
	}
	return true
}

// pairUp makes each first-level literal entry whose next code, read from
// the same index, is a literal too and fits in it with the first, an entry
// of both: one lookup for two literals. Short literal codes are the rule in
// COPY text: digits, hex, separators.
func pairUp(t *[litTableSize]uint32) {
	var one [1 << litBits]uint32
	copy(one[:], t[:])
	for i, e := range one {
		if e&kindMask != kindLit {
			continue
		}
		n := e & 31
		if e2 := one[uint32(i)>>n]; e2&kindMask == kindLit && n+e2&31 <= litBits {
			t[i] = kindLit | 2<<8 | (e>>16|e2>>16<<8)<<16 | (n + e2&31)
		}
	}
}

// deflate inflates one DEFLATE stream from the inflater's input into its
// window, flushing the window into the sum as it fills.
func (f *inflater) deflate() error {
	for {
		if err := f.need(3); err != nil {
			return err
		}
		final := f.bits&1 != 0
		typ := f.bits >> 1 & 3
		f.drop(3)
		var err error
		switch typ {
		case 0:
			err = f.stored()
		case 1:
			err = f.huffman(&fixedLit, &fixedDist)
		case 2:
			if err = f.dynamic(); err == nil {
				err = f.huffman(&f.lit, &f.dist)
			}
		default:
			err = errBlockType
		}
		if err != nil || final {
			return err
		}
	}
}

// stored copies a stored block into the window.
func (f *inflater) stored() error {
	f.drop(f.nb & 7)
	var hdr [4]byte
	if err := f.aligned(hdr[:]); err != nil {
		return err
	}
	n := int(binary.LittleEndian.Uint16(hdr[:2]))
	if uint16(n) != ^binary.LittleEndian.Uint16(hdr[2:]) {
		return errStoredLen
	}
	for n > 0 {
		if f.wp == len(f.win) {
			f.flush()
		}
		k := min(n, len(f.win)-f.wp)
		if err := f.aligned(f.win[f.wp : f.wp+k]); err != nil {
			return err
		}
		f.wp += k
		n -= k
	}
	return nil
}

// dynamic reads a dynamic block's code lengths and builds its tables.
func (f *inflater) dynamic() error {
	if err := f.need(14); err != nil {
		return err
	}
	nlen := int(f.bits&31) + 257
	ndist := int(f.bits>>5&31) + 1
	ncode := int(f.bits>>10&15) + 4
	f.drop(14)
	if nlen > 286 || ndist > 30 {
		return errSymbols
	}
	var cl [19]uint8
	for i := range ncode {
		if err := f.need(3); err != nil {
			return err
		}
		cl[codeOrder[i]] = uint8(f.bits & 7)
		f.drop(3)
	}
	var codes [1 << lenBits]uint32
	if !buildTable(codes[:], lenBits, cl[:], symEntry, true, &f.longest) {
		return errCodeLens
	}
	lens := f.lens[:nlen+ndist]
	for i := 0; i < len(lens); {
		if err := f.need(7); err != nil && f.nb < 7 {
			// Fewer bits than the longest code at the end of the input:
			// the code read decides whether they are enough.
			if e := codes[f.bits&(1<<lenBits-1)]; e&kindMask == kindBad || uint(e&31) > f.nb {
				return err
			}
		}
		e := codes[f.bits&(1<<lenBits-1)]
		if e&kindMask != kindSym {
			return errCodeLens
		}
		f.drop(uint(e & 31))
		sym := e >> 16
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return errRepeat
			}
			if err := f.need(2); err != nil {
				return err
			}
			rep, val = 3+int(f.bits&3), lens[i-1]
			f.drop(2)
		case 17:
			if err := f.need(3); err != nil {
				return err
			}
			rep = 3 + int(f.bits&7)
			f.drop(3)
		default:
			if err := f.need(7); err != nil {
				return err
			}
			rep = 11 + int(f.bits&127)
			f.drop(7)
		}
		if i+rep > len(lens) {
			return errRepeat
		}
		for range rep {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return errMissingEOB
	}
	if !buildTable(f.lit[:], litBits, lens[:nlen], litEntry, false, &f.longest) {
		return errLitLenSet
	}
	pairUp(&f.lit)
	if !buildTable(f.dist[:], distBits, lens[nlen:], distEntry, false, &f.longest) {
		return errDistSet
	}
	return nil
}

// huffman decodes one block's symbols with tables lt and dt. The bit
// buffer is refilled at the top of each step to at least 56 bits while 8
// input bytes are left, enough for the longest length/distance pair (48
// bits); near the input's end each code is checked against the bits there
// are.
func (f *inflater) huffman(lt *[litTableSize]uint32, dt *[distTableSize]uint32) error {
	win := f.win
	wp := f.wp
	bitbuf, nb := f.bits, f.nb
	defer func() { f.wp, f.bits, f.nb = wp, bitbuf, nb }()
	for {
		if wp > len(win)-maxMatch-16 {
			f.wp = wp
			f.flush()
			wp = f.wp
		}
		if f.iend-f.ip >= 8 {
			bitbuf |= binary.LittleEndian.Uint64(f.in[f.ip:]) << nb
			f.ip += int((63 - nb) >> 3)
			nb |= 56
		} else {
			f.bits, f.nb = bitbuf, nb
			f.refill()
			bitbuf, nb = f.bits, f.nb
		}
		e := lt[bitbuf&(1<<litBits-1)]
		if e&kindMask == kindSub {
			if litBits > nb {
				return f.inErr()
			}
			bitbuf >>= litBits
			nb -= litBits
			e = lt[e>>16+uint32(bitbuf)&(1<<(e>>8&0xf)-1)]
		}
		n := uint(e & 31)
		if n > nb {
			return f.inErr()
		}
		bitbuf >>= n
		nb -= n
		switch e & kindMask {
		case kindLit:
			// One or two literals; two bytes are written either way.
			binary.LittleEndian.PutUint16(win[wp:], uint16(e>>16))
			wp += int(e >> 8 & 0xf)
			// Up to two more lookups of literals from the same refill.
			if e = lt[bitbuf&(1<<litBits-1)]; e&kindMask == kindLit && uint(e&31) <= nb {
				bitbuf >>= e & 31
				nb -= uint(e & 31)
				binary.LittleEndian.PutUint16(win[wp:], uint16(e>>16))
				wp += int(e >> 8 & 0xf)
				if e = lt[bitbuf&(1<<litBits-1)]; e&kindMask == kindLit && uint(e&31) <= nb {
					bitbuf >>= e & 31
					nb -= uint(e & 31)
					binary.LittleEndian.PutUint16(win[wp:], uint16(e>>16))
					wp += int(e >> 8 & 0xf)
				}
			}
			continue
		case kindEOB:
			return nil
		case kindBad:
			return errCode
		}
		// A length, then its distance.
		x := uint(e >> 8 & 0xf)
		if x > nb {
			return f.inErr()
		}
		length := int(e>>16) + int(bitbuf&(1<<x-1))
		bitbuf >>= x
		nb -= x
		d := dt[bitbuf&(1<<distBits-1)]
		if d&kindMask == kindSub {
			if distBits > nb {
				return f.inErr()
			}
			bitbuf >>= distBits
			nb -= distBits
			d = dt[d>>16+uint32(bitbuf)&(1<<(d>>8&0xf)-1)]
		}
		n = uint(d & 31)
		if n > nb {
			return f.inErr()
		}
		if d&kindMask != kindDist {
			return errCode
		}
		x = uint(d >> 8 & 0xf)
		if n+x > nb {
			return f.inErr()
		}
		bitbuf >>= n
		dist := int(d>>16) + int(bitbuf&(1<<x-1))
		bitbuf >>= x
		nb -= n + x
		if dist > wp {
			return errDistTooFar
		}
		switch {
		case dist >= 8:
			// 8 bytes at a time, each read from bytes already final
			// (dist >= 8); the last word may write up to 7 bytes past
			// the match, into room flush keeps free.
			src := wp - dist
			for k := 0; k < length; k += 8 {
				binary.LittleEndian.PutUint64(win[wp+k:], binary.LittleEndian.Uint64(win[src+k:]))
			}
		case dist >= length:
			copy(win[wp:wp+length], win[wp-dist:])
		default:
			// Overlapping: a pattern of period dist, copied from its
			// start in ever longer runs (a multiple of dist each time).
			for k := 0; k < length; {
				k += copy(win[wp+k:wp+length], win[wp-dist:wp+k])
			}
		}
		wp += length
	}
}

// need makes sure the bit buffer holds n bits (at most 57).
func (f *inflater) need(n uint) error {
	if f.nb >= n {
		return nil
	}
	f.refill()
	if f.nb >= n {
		return nil
	}
	return f.inErr()
}

// refill loads input bytes into the bit buffer until it holds 56 bits or
// more (63 at most, which the shift in the 8-byte load needs) or the input
// ends.
func (f *inflater) refill() {
	for f.nb < 56 {
		if f.iend-f.ip >= 8 {
			f.bits |= binary.LittleEndian.Uint64(f.in[f.ip:]) << f.nb
			f.ip += int((63 - f.nb) >> 3)
			f.nb |= 56
			return
		}
		if f.ip == f.iend && !f.fill() {
			return
		}
		if f.iend-f.ip < 8 {
			f.bits |= uint64(f.in[f.ip]) << f.nb
			f.ip++
			f.nb += 8
		}
	}
}

func (f *inflater) drop(n uint) {
	f.bits >>= n
	f.nb -= n
}

// aligned reads len(dst) bytes at a byte boundary: first the whole bytes in
// the bit buffer, then the input.
func (f *inflater) aligned(dst []byte) error {
	i := 0
	for ; i < len(dst) && f.nb >= 8; i++ {
		dst[i] = byte(f.bits)
		f.drop(8)
	}
	if f.nb == 0 {
		// Bits past nb were loaded ahead from input still at f.ip.
		f.bits = 0
	}
	for i < len(dst) {
		if f.ip == f.iend && !f.fill() {
			return f.inErr()
		}
		k := copy(dst[i:], f.in[f.ip:f.iend])
		f.ip += k
		i += k
	}
	return nil
}

// fill reads more input, keeping what is unread; false when none came.
func (f *inflater) fill() bool {
	if f.srcErr != nil {
		return false
	}
	n := copy(f.in, f.in[f.ip:f.iend])
	f.ip, f.iend = 0, n
	for empty := 0; f.iend < 8; {
		m, err := f.src.Read(f.in[f.iend:])
		f.iend += m
		if err != nil {
			f.srcErr = err
			break
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty == 100 {
			// As bufio gives up on a reader that returns nothing.
			f.srcErr = io.ErrNoProgress
			break
		}
	}
	return f.iend > f.ip
}

// inErr is why the input could not give the bits or bytes asked for.
func (f *inflater) inErr() error {
	if f.srcErr != nil && f.srcErr != io.EOF {
		return f.srcErr
	}
	return io.ErrUnexpectedEOF
}

// flush sums the window's new bytes and slides it, keeping the last 32 KiB
// that later distances may reach.
func (f *inflater) flush() {
	f.sum.Write(f.win[f.fl:f.wp])
	f.total += int64(f.wp - f.fl)
	if f.wp > winHist {
		copy(f.win, f.win[f.wp-winHist:f.wp])
		f.wp = winHist
	}
	f.fl = f.wp
}
