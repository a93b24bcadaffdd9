// Package pgdump reads pg_dump custom-format (-Fc) archives natively: the
// header, the table of contents, then every data block to its end, inflating
// compressed data as pg_restore would, without writing it anywhere. It finds
// what `pg_restore -f /dev/null` finds (a truncated or corrupt archive) with
// no PostgreSQL installed, streaming, in bounded memory whatever the
// archive's size.
//
// The format is the one pg_backup_archiver.c and pg_backup_custom.c write:
//
//	header:  "PGDMP", version (3 bytes), int size, offset size, format,
//	         compression, creation time (7 ints), database, server and
//	         pg_dump versions
//	TOC:     entry count, then per entry its id, whether it had data, catalog
//	         ids, tag, description, section, SQL, owner, dependencies and the
//	         data block's offset (a flag byte and an offset)
//	data:    per data-bearing entry, in file order: a block type byte
//	         (1 table data, 3 large objects), the entry id, then chunks
//	         (length, bytes) ended by a zero length; a large-object block
//	         holds (oid, chunks...) pairs ended by oid 0
//
// An int is a sign byte and int-size little-endian bytes; a string is an int
// length (negative for NULL) and its bytes. Compressed data is one zlib
// stream per table or large object, cut into chunks.
package pgdump

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// Compression algorithms, as Info.Compression names them.
const (
	CompressionNone = "none"
	CompressionGzip = "gzip"
	CompressionLZ4  = "lz4"
	CompressionZstd = "zstd"
)

// Options tune Read.
type Options struct {
	// Workers is how many goroutines inflate compressed data, one table or
	// large object each. 0 means runtime.GOMAXPROCS(0); 1 inflates in the
	// calling goroutine.
	Workers int
	// SpillDir, when set, is a folder for a temporary file where compressed
	// data waits for a busy worker, so that every worker has a table to
	// inflate while one large table is still being inflated. The file is
	// unlinked at once and its blocks freed as they are read. "" holds
	// only a few segments per worker, in memory.
	SpillDir string
	// SpillMax bounds the bytes waiting in this read's spill file at once;
	// 0 shares the budget SetSpillMax sets with every other read that says 0.
	SpillMax int64
}

// Info is what Read learnt about an archive it read to its end.
type Info struct {
	ArchiveVersion string    // "1.14-0"
	Compression    string    // CompressionNone, CompressionGzip...
	Created        time.Time // as the header's broken-down time says, read as UTC
	Database       string
	ServerVersion  string // version of the server dumped
	DumpVersion    string // version of pg_dump that wrote the archive

	TOCEntries    int   // entries in the table of contents
	DataEntries   int   // entries the TOC says have data
	DataBlocks    int   // data blocks read
	LargeObjects  int   // large objects read inside large-object blocks
	BytesRead     int64 // archive bytes consumed
	BytesInflated int64 // data bytes after decompression
	SpilledBytes  int64 // compressed bytes that waited in the spill file
}

// Archive format constants (pg_backup_archiver.h, pg_backup_custom.c).
const (
	archCustom    = 1
	archDirectory = 5

	blkData  = 1
	blkBlobs = 3

	offPosNotSet = 1
	offPosSet    = 2
	offNoData    = 3

	minVersion = 10 // 1.10 (PostgreSQL 8.4): tablespaces in the TOC
	maxVersion = 16 // 1.16 (PostgreSQL 17): relkind in the TOC

	// keepMax bounds the bytes kept of any string read from the archive;
	// longer strings are skipped past, never held.
	keepMax = 64 << 10
)

// Read reads a custom-format archive from r to its end and reports what it
// holds. A malformed archive yields an *Error whose Kind is ErrTruncated or
// ErrCorrupt; one this reader cannot interpret yields ErrUnsupported (read it
// with pg_restore instead). Errors from r itself and from ctx are returned
// wrapped, never as one of those kinds.
func Read(ctx context.Context, r io.Reader, opts Options) (Info, error) {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	a := &archive{ctx: ctx, br: bufio.NewReaderSize(r, 256<<10), workers: workers, spillDir: opts.SpillDir, spillMax: opts.SpillMax}
	err := a.read()
	if a.pool != nil {
		a.info.SpilledBytes = a.pool.spill.written()
	}
	a.info.BytesRead = a.pos
	a.info.BytesInflated += a.inflated.Load()
	return a.info, err
}

type entry struct {
	hadDumper bool
	state     byte
	pos       int64
	seen      bool
}

type archive struct {
	ctx       context.Context
	br        *bufio.Reader
	pos       int64
	info      Info
	vmin      int
	gzip      bool
	workers   int
	entries   map[int32]*entry
	maxID     int32
	tableDeps []tableDep
	inflated  atomic.Int64
	pool      *inflatePool // nil until the first compressed stream, when workers > 1
	inline    *inflater    // nil until the first compressed stream, when workers == 1
	stage     []byte       // the segment being filled, parallel path
	spillDir  string
	spillMax  int64
}

func (a *archive) read() (err error) {
	if err := a.readHeader(); err != nil {
		return err
	}
	if err := a.readTOC(); err != nil {
		return err
	}
	defer func() {
		if a.pool != nil {
			err = a.pool.finish(err)
		}
	}()
	return a.readData()
}

// fail builds an error of the given kind at the current offset.
func (a *archive) fail(kind error, format string, args ...any) error {
	return errAt(kind, a.pos, format, args...)
}

// ioErr classifies an error from the underlying reader: the end of input
// inside a structure is truncation; anything else is the source's failure.
func (a *archive) ioErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return a.fail(ErrTruncated, "archive ends inside %s", what)
	}
	return fmt.Errorf("read archive at byte %d: %w", a.pos, err)
}

func (a *archive) readByte(what string) (byte, error) {
	b, err := a.br.ReadByte()
	if err != nil {
		return 0, a.ioErr(err, what)
	}
	a.pos++
	return b, nil
}

// readInt reads an int as pg_restore's ReadInt does with a 4-byte int: a sign
// byte (any non-zero value means negative) and 4 little-endian bytes that
// wrap into a C int.
func (a *archive) readInt(what string) (int32, error) {
	var b [5]byte
	n, err := io.ReadFull(a.br, b[:])
	a.pos += int64(n)
	if err != nil {
		return 0, a.ioErr(err, what)
	}
	v := int32(uint32(b[1]) | uint32(b[2])<<8 | uint32(b[3])<<16 | uint32(b[4])<<24)
	if b[0] != 0 {
		v = -v
	}
	return v, nil
}

// skip consumes n bytes without keeping them.
func (a *archive) skip(n int64, what string) error {
	for n > 0 {
		step := n
		if step > 1<<30 {
			step = 1 << 30
		}
		d, err := a.br.Discard(int(step))
		a.pos += int64(d)
		n -= int64(d)
		if err != nil {
			return a.ioErr(err, what)
		}
	}
	return nil
}

// readStr reads a string; null reports a NULL (negative length). At most
// keepMax bytes are kept; the rest is skipped.
func (a *archive) readStr(what string) (s string, null bool, err error) {
	n, err := a.readInt(what)
	if err != nil {
		return "", false, err
	}
	if n < 0 {
		return "", true, nil
	}
	keep := min(int64(n), keepMax)
	buf := make([]byte, keep)
	k, err := io.ReadFull(a.br, buf)
	a.pos += int64(k)
	if err != nil {
		return "", false, a.ioErr(err, what)
	}
	if err := a.skip(int64(n)-keep, what); err != nil {
		return "", false, err
	}
	return string(buf), false, nil
}

// skipStr reads past a string.
func (a *archive) skipStr(what string) error {
	n, err := a.readInt(what)
	if err != nil {
		return err
	}
	if n > 0 {
		return a.skip(int64(n), what)
	}
	return nil
}

func (a *archive) readHeader() error {
	var magic [5]byte
	n, err := io.ReadFull(a.br, magic[:])
	a.pos += int64(n)
	if err != nil {
		return a.ioErr(err, "the header")
	}
	if string(magic[:]) != "PGDMP" {
		return errAt(ErrCorrupt, 0, "no PGDMP magic: not a pg_dump custom-format archive")
	}
	var v [6]byte // vmaj, vmin, vrev, int size, offset size, format
	n, err = io.ReadFull(a.br, v[:])
	a.pos += int64(n)
	if err != nil {
		return a.ioErr(err, "the header")
	}
	vmaj, vmin, vrev := int(v[0]), int(v[1]), int(v[2])
	a.vmin = vmin
	a.info.ArchiveVersion = fmt.Sprintf("%d.%d-%d", vmaj, vmin, vrev)
	// Every pg_dump writes revision 0; pg_restore 15 crashes on 1.14-255.
	if vmaj != 1 || vmin < minVersion || vmin > maxVersion || vrev != 0 {
		return errAt(ErrUnsupported, 5, "archive version %s (this reader knows 1.%d to 1.%d)", a.info.ArchiveVersion, minVersion, maxVersion)
	}
	if v[3] != 4 {
		return errAt(ErrUnsupported, 8, "integer size %d (pg_dump writes 4)", v[3])
	}
	if v[4] != 8 {
		return errAt(ErrUnsupported, 9, "offset size %d (pg_dump writes 8)", v[4])
	}
	switch v[5] {
	case archCustom:
	case archDirectory:
		return errAt(ErrUnsupported, 10, "directory-format table of contents, not a custom-format archive")
	default:
		return errAt(ErrCorrupt, 10, "format %d in a custom-format header", v[5])
	}

	if vmin >= 15 {
		algo, err := a.readByte("the header")
		if err != nil {
			return err
		}
		switch algo {
		case 0:
			a.info.Compression = CompressionNone
		case 1:
			a.info.Compression = CompressionGzip
		case 2:
			a.info.Compression = CompressionLZ4
		case 3:
			a.info.Compression = CompressionZstd
		default:
			return a.fail(ErrCorrupt, "unknown compression algorithm %d", algo)
		}
	} else {
		level, err := a.readInt("the header")
		if err != nil {
			return err
		}
		// pg_restore accepts only what pg_dump writes: -1 (zlib's
		// default), 0 (none) or 1 to 9.
		if level < -1 || level > 9 {
			return a.fail(ErrCorrupt, "invalid compression level %d", level)
		}
		a.info.Compression = CompressionNone
		if level != 0 {
			a.info.Compression = CompressionGzip
		}
	}
	switch a.info.Compression {
	case CompressionLZ4, CompressionZstd:
		return a.fail(ErrUnsupported, "%s-compressed data", a.info.Compression)
	}
	a.gzip = a.info.Compression == CompressionGzip

	var tm [7]int32 // sec, min, hour, mday, mon, year, isdst
	for i := range tm {
		if tm[i], err = a.readInt("the header's creation time"); err != nil {
			return err
		}
	}
	// pg_restore only warns about an impossible date; so does this reader,
	// by normalising it as mktime would.
	a.info.Created = time.Date(int(tm[5])+1900, time.Month(tm[4]+1), int(tm[3]), int(tm[2]), int(tm[1]), int(tm[0]), 0, time.UTC)
	if a.info.Database, _, err = a.readStr("the header's database name"); err != nil {
		return err
	}
	if a.info.ServerVersion, _, err = a.readStr("the header's server version"); err != nil {
		return err
	}
	if a.info.DumpVersion, _, err = a.readStr("the header's pg_dump version"); err != nil {
		return err
	}
	return nil
}

func (a *archive) readTOC() error {
	count, err := a.readInt("the TOC's entry count")
	if err != nil {
		return err
	}
	if count < 0 {
		return a.fail(ErrCorrupt, "negative TOC entry count %d", count)
	}
	a.entries = make(map[int32]*entry)
	for i := int32(0); i < count; i++ {
		if err := a.ctx.Err(); err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := a.readEntry(i); err != nil {
			return err
		}
		a.info.TOCEntries++
	}
	for _, d := range a.tableDeps {
		if d.table <= 0 || d.table > a.maxID {
			return a.fail(ErrCorrupt, "TABLE DATA entry %d depends on entry %d, not a table of this archive", d.entry, d.table)
		}
	}
	return nil
}

type tableDep struct{ entry, table int32 }

// scanInt reads a decimal int as C's sscanf("%d") does; 0 when there is none.
func scanInt(s string) int32 {
	s = strings.TrimLeft(cString(s), " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	var v int64
	digits := 0
	for ; digits < len(s) && s[digits] >= '0' && s[digits] <= '9'; digits++ {
		if v < math.MaxInt64/10 {
			v = v*10 + int64(s[digits]-'0')
		}
	}
	if digits == 0 {
		return 0
	}
	if neg {
		v = -v
	}
	return int32(v) // glibc clamps to a long, then the store truncates
}

func (a *archive) readEntry(i int32) error {
	what := fmt.Sprintf("TOC entry %d", i+1)
	start := a.pos
	id, err := a.readInt(what)
	if err != nil {
		return err
	}
	if id <= 0 {
		return errAt(ErrCorrupt, start, "%s has id %d, out of range", what, id)
	}
	if a.entries[id] != nil {
		return errAt(ErrCorrupt, start, "%s repeats id %d", what, id)
	}
	hadDumper, err := a.readInt(what)
	if err != nil {
		return err
	}
	// Catalog ids (table oid, oid).
	for range 2 {
		if err := a.skipStr(what); err != nil {
			return err
		}
	}
	_, tagNull, err := a.readStr(what)
	if err != nil {
		return err
	}
	desc, descNull, err := a.readStr(what)
	if err != nil {
		return err
	}
	if tagNull || descNull {
		// pg_dump always writes both; pg_restore compares desc without
		// checking for NULL.
		return errAt(ErrCorrupt, start, "%s has no tag or no description", what)
	}
	desc = cString(desc)
	what = fmt.Sprintf("TOC entry %d (%s)", id, desc)
	if a.vmin >= 11 {
		section, err := a.readInt(what)
		if err != nil {
			return err
		}
		if section < 1 || section > 4 {
			return a.fail(ErrCorrupt, "%s has section %d (pg_dump writes 1 to 4)", what, section)
		}
	}
	var defn string
	var defnNull bool
	if desc == "ENCODING" || desc == "STDSTRINGS" {
		defn, defnNull, err = a.readStr(what)
	} else {
		err = a.skipStr(what)
	}
	if err != nil {
		return err
	}
	// dropStmt, copyStmt, namespace, tablespace.
	for range 4 {
		if err := a.skipStr(what); err != nil {
			return err
		}
	}
	if a.vmin >= 14 { // table access method
		if err := a.skipStr(what); err != nil {
			return err
		}
	}
	if a.vmin >= 16 { // relkind
		if _, err := a.readInt(what); err != nil {
			return err
		}
	}
	// owner, with-oids.
	for range 2 {
		if err := a.skipStr(what); err != nil {
			return err
		}
	}
	for k := 0; ; k++ { // dependencies, ended by a NULL
		dep, null, err := a.readStr(what)
		if err != nil {
			return err
		}
		if null {
			break
		}
		if k == 0 && desc == "TABLE DATA" {
			// pg_restore maps a table to its data through this one.
			a.tableDeps = append(a.tableDeps, tableDep{entry: id, table: scanInt(dep)})
		}
	}
	flag, err := a.readByte(what)
	if err != nil {
		return err
	}
	var off [8]byte
	n, err := io.ReadFull(a.br, off[:])
	a.pos += int64(n)
	if err != nil {
		return a.ioErr(err, what)
	}
	e := &entry{hadDumper: hadDumper != 0, state: flag}
	for k := 7; k >= 0; k-- {
		e.pos = e.pos<<8 | int64(off[k])
	}
	switch flag {
	case offPosNotSet, offPosSet, offNoData:
	default:
		return a.fail(ErrCorrupt, "%s has data offset flag %d", what, flag)
	}
	// pg_dump gives an entry a data offset exactly when it has a data
	// dumper; pg_restore reads data only when both say so, so a mismatch
	// would silently lose (or invent) a table's data.
	if e.hadDumper != (flag != offNoData) {
		return a.fail(ErrCorrupt, "%s: data flag %d disagrees with data offset flag %d", what, hadDumper, flag)
	}
	if msg := checkSpecialEntry(desc, defn, defnNull); msg != "" {
		return errAt(ErrCorrupt, start, "%s", msg)
	}
	a.entries[id] = e
	a.maxID = max(a.maxID, id)
	if flag != offNoData {
		a.info.DataEntries++
	}
	return nil
}

func (a *archive) readData() error {
	for {
		if err := a.ctx.Err(); err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if a.pool != nil && a.pool.failed() {
			return errStopped
		}
		start := a.pos
		typ, err := a.br.ReadByte()
		if errors.Is(err, io.EOF) {
			return a.checkAllSeen()
		}
		if err != nil {
			return a.ioErr(err, "a data block header")
		}
		a.pos++
		id, err := a.readInt("a data block header")
		if err != nil {
			return err
		}
		if typ != blkData && typ != blkBlobs {
			return errAt(ErrCorrupt, start, "data block of unknown type %d", typ)
		}
		e := a.entries[id]
		switch {
		case e == nil || e.state == offNoData:
			return errAt(ErrCorrupt, start, "data block for entry %d, which the TOC lists without data", id)
		case e.seen:
			return errAt(ErrCorrupt, start, "second data block for entry %d", id)
		case e.state == offPosSet && e.pos != start:
			return errAt(ErrCorrupt, start, "data block for entry %d found at byte %d; the TOC says byte %d", id, start, e.pos)
		}
		e.seen = true
		a.info.DataBlocks++
		if typ == blkData {
			if err := a.readStream(fmt.Sprintf("the data of entry %d", id)); err != nil {
				return err
			}
			continue
		}
		for {
			oid, err := a.readInt(fmt.Sprintf("the large objects of entry %d", id))
			if err != nil {
				return err
			}
			if oid == 0 {
				break
			}
			a.info.LargeObjects++
			if err := a.readStream(fmt.Sprintf("large object %d", uint32(oid))); err != nil {
				return err
			}
		}
	}
}

// checkAllSeen runs at the end of input: every entry the TOC promised data
// for must have had its block.
func (a *archive) checkAllSeen() error {
	missing, first := 0, int32(0)
	for id, e := range a.entries {
		if e.state != offNoData && !e.seen {
			missing++
			if first == 0 || id < first {
				first = id
			}
		}
	}
	if missing > 0 {
		return a.fail(ErrTruncated, "archive ends before the data of %d entries (the first: entry %d)", missing, first)
	}
	return nil
}

// readStream reads one table's or large object's data: chunks up to a zero
// length, inflated when the archive is compressed.
func (a *archive) readStream(what string) error {
	if !a.gzip {
		for {
			n, err := a.readInt(what)
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			if n < 0 {
				return a.fail(ErrCorrupt, "%s has a chunk of negative length %d", what, n)
			}
			if err := a.skip(int64(n), what); err != nil {
				return err
			}
			a.inflated.Add(int64(n))
		}
	}
	if a.workers <= 1 {
		if a.inline == nil {
			a.inline = newInflater()
		}
		d := &dechunker{a: a, what: what}
		start := a.pos
		n, err := a.inline.inflate(d)
		a.inflated.Add(n)
		if d.err != nil {
			return d.err
		}
		if err != nil {
			return errAt(ErrCorrupt, start, "%s: %v", what, err)
		}
		return nil
	}
	if a.pool == nil {
		a.pool = newInflatePool(a.ctx, a.workers, &a.inflated, newSpill(a.spillDir, a.spillMax))
	}
	return a.feed(what)
}

// dechunker reads one stream's chunk payloads straight from the archive,
// returning io.EOF at its zero-length terminator.
type dechunker struct {
	a    *archive
	what string
	left int64
	done bool
	err  error // the archive's own failure (truncation, I/O, bad length)
}

func (d *dechunker) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	for d.left == 0 {
		if d.done {
			return 0, io.EOF
		}
		n, err := d.a.readInt(d.what)
		if err != nil {
			d.err = err
			return 0, err
		}
		if n == 0 {
			d.done = true
			return 0, io.EOF
		}
		if n < 0 {
			d.err = d.a.fail(ErrCorrupt, "%s has a chunk of negative length %d", d.what, n)
			return 0, d.err
		}
		d.left = int64(n)
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.a.br.Read(p)
	d.a.pos += int64(n)
	d.left -= int64(n)
	if err != nil && n == 0 {
		d.err = d.a.ioErr(err, d.what)
		return 0, d.err
	}
	return n, nil
}

// headerFixed is the length of the header's fixed part: magic, version, int
// and offset sizes, format, and the compression (an int before 1.15).
const headerFixed = 5 + 6 + 5

// Sniff tells, from an archive's first bytes, whether Read can interpret it:
// it returns an error wrapping ErrUnsupported when not (read it with
// pg_restore instead), nil otherwise, including for a damaged header, which
// Read then reports. head must hold the first 16 bytes when the archive has
// them.
func Sniff(head []byte) error {
	head = head[:min(len(head), headerFixed)]
	_, err := Read(context.Background(), bytes.NewReader(head), Options{Workers: 1})
	if errors.Is(err, ErrUnsupported) {
		return err
	}
	return nil
}
