package verifier

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/backupverify/backupverify/verifier/pgdump"
)

// Result is the outcome of verifying one backup.
type Result struct {
	Key          string    `json:"key"`
	ETag         string    `json:"etag"`
	Size         int64     `json:"size"`
	LastModified time.Time `json:"last_modified"`
	// Created is the backup's time: the archive header's creation time when it
	// can be read, else the object's LastModified; never later than when it was
	// first seen.
	Created       time.Time   `json:"created"`
	DatedInFuture bool        `json:"dated_in_future,omitempty"`
	Archive       ArchiveInfo `json:"archive"`
	SHA256        string      `json:"sha256,omitempty"`
	Expected      string      `json:"expected_sha256,omitempty"`
	ChecksumFrom  string      `json:"checksum_from,omitempty"`
	// Reader is what read the archive: ReaderNative (this program) or
	// ReaderPgRestore (a custom-format archive the native reader does not
	// know); empty when the archive was not read.
	Reader    string    `json:"reader,omitempty"`
	BytesRead int64     `json:"bytes_read"`
	Started   time.Time `json:"started"`
	Duration  Seconds   `json:"duration_seconds"`
	OK        bool      `json:"ok"`
	Reason    Reason    `json:"reason,omitempty"`
	Error     string    `json:"error,omitempty"`
	// Stack is the goroutine stack of a panic recovered while verifying,
	// for the log; it is never persisted or shown.
	Stack string `json:"-"`
}

// Seconds is a duration written as fractional seconds in JSON.
type Seconds float64

// D converts to a time.Duration.
func (s Seconds) D() time.Duration { return time.Duration(float64(s) * float64(time.Second)) }

func secondsOf(d time.Duration) Seconds { return Seconds(d.Seconds()) }

// futureSlack is how far a header time may lie after the backup's upload
// before it is reported as wrongly dated (clocks of two hosts differ by a
// little); the backup's time is clamped to the upload either way.
const futureSlack = time.Minute

// Verify streams a backup once: sha256 while reading, and the archive read to
// its end (pg_restore for custom format, full decompression and the end-of-dump
// marker for plain SQL). Nothing is written to disk. A custom-format header's
// zone-less time is read in tz (nil: UTC). It returns an error only when ctx
// was cancelled; every other failure is in the Result.
func Verify(ctx context.Context, src Source, ar ArchiveReader, b Backup, tz *time.Location, now func() time.Time) (Result, error) {
	return VerifyTo(ctx, src, ar, b, tz, now, CopyOptions{})
}

// CopyOptions say what VerifyTo does besides verifying.
type CopyOptions struct {
	// To, when not nil, receives every byte read: a drill keeps its copy
	// for the restore, in the same single pass. A failed write fails the
	// Result as download_error.
	To io.Writer
	// HeaderOnly reads only a custom-format archive's header, for a
	// caller whose restore reads every block next (Result.Reader is then
	// ""); it calls ReadArchiveFile to tell a broken archive from a failed
	// restore. Plain SQL is always read to its end: psql would run a
	// truncated script without complaint.
	HeaderOnly bool
	// Limits bound the verification (targets[].verify).
	Limits VerifySpec
	// SpillDir, when set, lets the native reader park compressed data in
	// a temporary file there (unlinked at once; verify.spill_max, see
	// pgdump.SetSpillMax, for all verifications together), so that it inflates several tables
	// at once; "" keeps it to a few MiB of memory per worker.
	SpillDir string
}

// VerifyTo is Verify with a copy of the bytes, or with the archive read
// left to the restore that follows (see CopyOptions).
//
// A panic while reading (a parser bug met by a hostile archive) is recovered
// and recorded as unreadable_archive, with its stack in Result.Stack: one bad
// backup never takes the watch loop down with it.
//
// opt.Limits bound the verification: past Limits.Timeout it fails as
// download_error when the backup's bytes were not all read by then, else as
// unreadable_archive; a plain dump that decompresses past
// Limits.MaxPlainBytes fails as unreadable_archive. Both errors name the limit.
func VerifyTo(parent context.Context, src Source, ar ArchiveReader, b Backup, tz *time.Location, now func() time.Time, opt CopyOptions) (res Result, err error) {
	ctx, cancel := parent, context.CancelFunc(func() {})
	if opt.Limits.Timeout > 0 {
		ctx, cancel = context.WithTimeoutCause(parent, opt.Limits.Timeout, errVerifyTimeout)
	}
	defer cancel()
	w := opt.To
	start := now()
	r := Result{Key: b.Key, ETag: b.ETag, Size: b.Size, LastModified: b.LastModified, Started: start}
	defer func() {
		if p := recover(); p != nil {
			res, err = r, nil
			res.OK, res.Reason = false, ReasonUnreadableArchive
			res.Error = fmt.Sprintf("%s: internal error while reading the backup: panic: %v", b.Key, p)
			res.Stack = string(debug.Stack())
			res.Duration = secondsOf(now().Sub(start))
			res.setCreated(now)
		}
	}()
	timedOut := func() bool { return parent.Err() == nil && errors.Is(context.Cause(ctx), errVerifyTimeout) }
	fail := func(reason Reason, err error) (Result, error) {
		if parent.Err() != nil {
			return r, parent.Err()
		}
		if timedOut() {
			reason = ReasonUnreadableArchive
			if r.BytesRead < b.Size {
				reason = ReasonDownloadError
			}
			err = fmt.Errorf("%s: verification stopped at verify.timeout (%s), after reading %d of %d bytes", b.Key, durationText(opt.Limits.Timeout), r.BytesRead, b.Size)
		}
		r.Reason, r.Error = reason, err.Error()
		r.Duration = secondsOf(now().Sub(start))
		r.setCreated(now)
		return r, nil
	}

	expected, from, err := expectedChecksum(ctx, src, b)
	if err != nil {
		if errors.Is(err, errMissingChecksum) {
			return fail(ReasonMissingChecksum, err)
		}
		return fail(ReasonDownloadError, err)
	}
	r.Expected, r.ChecksumFrom = expected, from

	var body io.ReadCloser
	if rs, f := useParts(src, w, b); rs != nil {
		// A drill's large copy: in parallel parts, written to the file by
		// the download and read back from it in order.
		pf, perr := openParts(ctx, rs, b, f)
		switch {
		case perr == nil:
			body, w = pf, nil
		case !errors.Is(perr, ErrRangeIgnored):
			return fail(ReasonDownloadError, fmt.Errorf("open %s: %w", b.Key, perr))
		}
	}
	if body == nil {
		if body, err = src.Open(ctx, b.Key); err != nil {
			return fail(ReasonDownloadError, fmt.Errorf("open %s: %w", b.Key, err))
		}
	}
	defer body.Close()
	rec := &errRecorder{r: body}
	h := newHash(b.Size)
	defer h.Close()
	counted := &countingWriter{}
	sinks := []io.Writer{h, counted}
	copyTo := &errWriter{w: w}
	if w != nil {
		sinks = append(sinks, copyTo)
	}
	br := bufio.NewReaderSize(io.TeeReader(rec, io.MultiWriter(sinks...)), 256<<10)

	var (
		info       ArchiveInfo
		reader     string
		archiveErr error
	)
	if head := peek(br, 8192); opt.HeaderOnly && bytes.HasPrefix(head, []byte("PGDMP")) {
		info, archiveErr = parseCustomHeader(head)
	} else {
		info, reader, archiveErr = readArchive(ctx, br, ar, readOptions{maxPlain: opt.Limits.MaxPlainBytes, spillDir: opt.SpillDir, pgRestore: opt.Limits.PgRestoreOnly})
	}
	r.Archive, r.Reader = info.InZone(tz), reader
	// Whatever the archive reader left (it stops early on a broken archive)
	// is still hashed, so a bit flip is told apart from a broken dump.
	_, _ = io.Copy(io.Discard, ctxReader{ctx, br})
	r.BytesRead = counted.n
	r.SHA256 = hex.EncodeToString(h.Sum())
	if parent.Err() != nil {
		return r, parent.Err() // a cancelled read proves nothing either way
	}
	if timedOut() {
		return fail(ReasonDownloadError, context.Cause(ctx))
	}
	switch {
	case rec.err != nil:
		return fail(ReasonDownloadError, fmt.Errorf("read %s after %d bytes: %w", b.Key, counted.n, rec.err))
	case copyTo.err != nil:
		return fail(ReasonDownloadError, fmt.Errorf("write a copy of %s: %w", b.Key, copyTo.err))
	case counted.n != b.Size && b.Size > 0:
		return fail(ReasonDownloadError, fmt.Errorf("read %s: got %d bytes, the listing says %d (replaced while reading?)", b.Key, counted.n, b.Size))
	case expected != "" && r.SHA256 != expected:
		return fail(ReasonMismatch, fmt.Errorf("sha256 of %s is %s, %s says %s", b.Key, r.SHA256, from, expected))
	case errors.Is(archiveErr, pgdump.ErrSpill):
		// Our own temporary file failed, not the backup: no verdict.
		return fail(ReasonDownloadError, fmt.Errorf("%s: %w", b.Key, archiveErr))
	case archiveErr != nil:
		return fail(ReasonUnreadableArchive, fmt.Errorf("%s: %w", b.Key, archiveErr))
	}
	r.OK = true
	r.Duration = secondsOf(now().Sub(start))
	r.setCreated(now)
	return r, nil
}

// setCreated sets the backup's time: the header time, but never later than
// the object's upload (a dump is written before it is uploaded) nor than
// now, so that a wrongly dated backup cannot make RPO look better than it is.
// DatedInFuture says the header was later by more than futureSlack.
func (r *Result) setCreated(now func() time.Time) {
	raw := r.LastModified
	if !r.Archive.Created.IsZero() {
		raw = r.Archive.Created
	}
	t := raw
	if !r.LastModified.IsZero() && t.After(r.LastModified) {
		t = r.LastModified
	}
	if n := now(); t.After(n) {
		t = n
	}
	r.Created, r.DatedInFuture = t, raw.Sub(t) > futureSlack
}

// LikelyOffset names the UTC offset the dumping host probably had, when the
// header time read in tz lies after the upload: the zone's offset plus the
// gap, rounded to 15 minutes; "" when the gap is under 15 minutes.
func (r Result) LikelyOffset(tz *time.Location) string {
	gap := r.Archive.Created.Sub(r.LastModified).Round(15 * time.Minute)
	if r.Archive.Created.IsZero() || r.LastModified.IsZero() || gap < 15*time.Minute {
		return ""
	}
	if tz == nil {
		tz = time.UTC
	}
	_, off := r.Archive.Created.In(tz).Zone()
	total := time.Duration(off)*time.Second + gap
	sign := "+"
	if total < 0 {
		sign, total = "-", -total
	}
	return fmt.Sprintf("UTC%s%02d:%02d", sign, int(total.Hours()), int(total.Minutes())%60)
}

// ReadArchiveFile reads a local copy of an archive to its end, as Verify
// reads a backup, and says which reader did.
func ReadArchiveFile(ctx context.Context, path string, ar ArchiveReader) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, reader, err := readArchive(ctx, bufio.NewReaderSize(f, 256<<10), ar, readOptions{}) // custom format: no plain-size limit applies
	return reader, err
}

// Archive readers, as Result.Reader names them.
const (
	ReaderNative    = "native"
	ReaderPgRestore = "pg_restore"
)

var errVerifyTimeout = errors.New("verify.timeout reached")

// readOptions tune readArchive.
type readOptions struct {
	maxPlain  int64  // a plain dump's limit once decompressed (0: none)
	spillDir  string // the native reader's spill folder ("": memory only)
	pgRestore bool   // custom format: pg_restore, even where the native reader could
}

// readArchive reads the archive to its end, reports what its header says and
// which reader read it. A custom-format archive is read natively unless its
// header names a version or compression the native reader does not know, or
// o.pgRestore; then ar (pg_restore) reads it. A plain dump larger than
// o.maxPlain bytes once decompressed is an error naming verify.max_plain_size.
func readArchive(ctx context.Context, br *bufio.Reader, ar ArchiveReader, o readOptions) (ArchiveInfo, string, error) {
	head := peek(br, 8192)
	maxPlain, spillDir := o.maxPlain, o.spillDir
	switch {
	case bytes.HasPrefix(head, []byte("PGDMP")) && !o.pgRestore && pgdump.Sniff(head) == nil:
		if spillDir != "" {
			_ = os.MkdirAll(spillDir, 0o700) // without it, the reader holds to memory
		}
		n, err := pgdump.Read(ctx, br, pgdump.Options{SpillDir: spillDir})
		return ArchiveInfo{
			Format:        FormatCustom,
			Created:       n.Created,
			Database:      n.Database,
			DumpVersion:   n.DumpVersion,
			ServerVersion: n.ServerVersion,
			ArchiveVer:    n.ArchiveVersion,
			localTime:     true, // the header's broken-down time has no zone
		}, ReaderNative, err
	case bytes.HasPrefix(head, []byte("PGDMP")):
		info, err := parseCustomHeader(head)
		if err != nil {
			return info, "", err
		}
		return info, ReaderPgRestore, ar.ReadArchive(ctx, br)
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return ArchiveInfo{Format: FormatSQLGzip}, ReaderNative, fmt.Errorf("gzip: %w", err)
		}
		info, err := readSQL(ctx, capPlain(gz, maxPlain))
		info.Format = FormatSQLGzip
		if err != nil {
			return info, ReaderNative, fmt.Errorf("gzip: %w", err)
		}
		return info, ReaderNative, nil
	case len(head) == 0:
		return ArchiveInfo{}, "", errors.New("the backup is empty")
	default:
		info, err := readSQL(ctx, capPlain(br, maxPlain))
		return info, ReaderNative, err
	}
}

// capPlain fails a read past max bytes (0: no limit).
func capPlain(r io.Reader, max int64) io.Reader {
	if max <= 0 {
		return r
	}
	return &plainCap{r: r, left: max, max: max}
}

type plainCap struct {
	r         io.Reader
	left, max int64
}

func (c *plainCap) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One more byte tells a dump of exactly max bytes from a longer one.
		var one [1]byte
		if n, _ := c.r.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("the plain dump is larger than verify.max_plain_size (%d bytes) once decompressed: stopped reading there", c.max)
		}
		return c.r.Read(p)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// readSQL reads a plain-format dump to its end and checks pg_dump's closing marker.
func readSQL(ctx context.Context, r io.Reader) (ArchiveInfo, error) {
	headBuf := make([]byte, 8192)
	n, err := io.ReadFull(r, headBuf)
	headBuf = headBuf[:n]
	if !bytes.Contains(headBuf, []byte("-- PostgreSQL database dump")) {
		return ArchiveInfo{Format: FormatSQL}, errors.New("not a pg_dump archive: neither custom format nor a plain SQL dump")
	}
	info := parseSQLHeader(headBuf)
	tail := &tailWriter{max: 256}
	_, _ = tail.Write(headBuf)
	if err == nil {
		_, err = io.Copy(tail, ctxReader{ctx, r})
	} else if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	if err != nil {
		return info, err
	}
	if !tail.complete() {
		return info, errors.New("plain SQL dump ends without pg_dump's \"dump complete\" marker: it was cut short")
	}
	return info, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errRecorder remembers the first error, other than EOF, that its reader returned.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// errWriter writes to w until it fails, then remembers the error and drops
// the rest, so that a full disk is not taken for a broken archive.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err == nil {
		_, e.err = e.w.Write(p)
	}
	return len(p), nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
