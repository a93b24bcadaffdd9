package pgscratch

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// Restore implements verifier.ScratchDB.
func (d *scratchDB) Restore(ctx context.Context, path string, info verifier.ArchiveInfo, opt verifier.RestoreOptions) (verifier.RestoreReport, error) {
	var rep verifier.RestoreReport
	if err := d.checkIdentity(ctx); err != nil {
		return rep, err
	}
	var err error
	if info.Format == verifier.FormatCustom {
		rep, err = d.pgRestore(ctx, path, opt)
	} else {
		rep, err = d.psql(ctx, path, info.Format == verifier.FormatSQLGzip)
	}
	if err != nil {
		return rep, err
	}
	v, _, qerr := d.Query(ctx, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "+
		"WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'", time.Minute)
	if qerr != nil {
		return rep, fmt.Errorf("count restored tables: %w", qerr)
	}
	rep.Tables = int(v)
	return rep, nil
}

// pgRestore runs pg_restore -j as the restore role. Every error is tied to
// its TOC entry; only entries named in allow_errors are tolerated.
func (d *scratchDB) pgRestore(ctx context.Context, path string, opt verifier.RestoreOptions) (verifier.RestoreReport, error) {
	rep := verifier.RestoreReport{Tool: "pg_restore"}
	jobs := max(opt.Jobs, 1)
	cmd := command(ctx, d.bins.Path("pg_restore"), "--verbose", "--no-owner", "--no-acl",
		"--jobs", strconv.Itoa(jobs), "--dbname", d.restoreConn, path)
	cmd.Env = toolEnv(d.password)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return rep, err
	}
	if err := cmd.Start(); err != nil {
		return rep, fmt.Errorf("start pg_restore: %w", err)
	}
	// The parser may stop early (a line past its limit); what it leaves
	// is drained, or pg_restore would block on a full pipe. The last 64 KiB
	// are kept for an exit without a parsed error.
	tail := &tailBuffer{max: 64 << 10}
	errs := parseRestoreErrors(io.TeeReader(stderr, tail))
	_, _ = io.Copy(tail, stderr)
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return rep, context.Cause(ctx)
	}
	var fatal []string
	for _, e := range errs {
		if allowed(e.entry, opt.AllowErrors) {
			rep.IgnoredErrors = append(rep.IgnoredErrors, e.String())
		} else {
			fatal = append(fatal, e.String())
		}
	}
	if len(fatal) > 0 {
		return rep, fmt.Errorf("pg_restore: %d error(s) not allowed by drill.allow_errors: %s", len(fatal), summarize(fatal))
	}
	if waitErr != nil && len(errs) == 0 {
		return rep, fmt.Errorf("pg_restore: %s", firstLines(tail.String(), waitErr))
	}
	return rep, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.b = append(t.b[:0], p...)
		return n, nil
	}
	if over := len(t.b) + len(p) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// restoreError is one error pg_restore reported, with its TOC entry.
type restoreError struct {
	entry string // e.g. "EXTENSION pg_stat_statements"; "" when not tied to one
	msg   string
}

func (e restoreError) String() string {
	if e.entry == "" {
		return e.msg
	}
	return e.entry + ": " + e.msg
}

var tocEntryRE = regexp.MustCompile(`^pg_restore: from TOC entry \d+; \d+ \d+ (.*?)\s*$`)

// parseRestoreErrors reads pg_restore --verbose output and keeps the errors.
func parseRestoreErrors(r io.Reader) []restoreError {
	var out []restoreError
	entry := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := tocEntryRE.FindStringSubmatch(line); m != nil {
			entry = stripOwner(m[1])
			continue
		}
		if msg, ok := strings.CutPrefix(line, "pg_restore: error: "); ok {
			msg = strings.TrimPrefix(msg, "could not execute query: ")
			out = append(out, restoreError{entry: entry, msg: msg})
			entry = ""
			continue
		}
		// An error message continues on lines without the prefix (HINT, DETAIL).
		if len(out) > 0 && strings.HasPrefix(line, "DETAIL:") {
			out[len(out)-1].msg += " " + line
		}
		if strings.HasPrefix(line, "pg_restore: creating ") || strings.HasPrefix(line, "pg_restore: processing ") {
			entry = ""
		}
	}
	return out
}

// stripOwner drops the owner pg_restore prints after a TOC entry's name.
func stripOwner(desc string) string {
	desc = strings.TrimSuffix(desc, " (no owner)")
	if i := strings.LastIndexByte(desc, ' '); i > 0 {
		f := strings.Fields(desc)
		// "TYPE NAME OWNER": drop the last word when three or more remain.
		if len(f) >= 3 {
			return strings.Join(f[:len(f)-1], " ")
		}
	}
	return desc
}

// allowed matches an entry against allow_errors: the entry itself, or a
// COMMENT on it ("EXTENSION x" also allows "COMMENT EXTENSION x").
func allowed(entry string, allow []string) bool {
	if entry == "" {
		return false
	}
	for _, a := range allow {
		a = strings.TrimSpace(a)
		if entry == a || strings.HasPrefix(entry, a+" ") || entry == "COMMENT "+a {
			return true
		}
	}
	return false
}

func summarize(errs []string) string {
	if len(errs) > 5 {
		errs = append(errs[:5:5], fmt.Sprintf("and %d more", len(errs)-5))
	}
	return strings.Join(errs, "; ")
}

// psql restores a plain SQL dump with ON_ERROR_STOP, as the restore role.
// A plain dump is a psql script, and psql meta-commands run on this host
// (\! shell, \o |program, \copy ... program). So psql runs in restricted
// mode under a key the dump cannot know (\restrict, PostgreSQL's answer to
// CVE-2025-8714): no meta-command in the dump can run. The dump's own
// \restrict and \unrestrict lines (pg_dump ≥ 15.14 writes them) are dropped.
func (d *scratchDB) psql(ctx context.Context, path string, gz bool) (verifier.RestoreReport, error) {
	rep := verifier.RestoreReport{Tool: "psql"}
	f, err := os.Open(path)
	if err != nil {
		return rep, err
	}
	defer f.Close()
	var in io.Reader = bufio.NewReaderSize(f, 256<<10)
	if gz {
		zr, err := gzip.NewReader(in)
		if err != nil {
			return rep, fmt.Errorf("gzip: %w", err)
		}
		in = zr
	}
	cmd := command(ctx, d.bins.Path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", d.restoreConn)
	cmd.Env = toolEnv(d.password)
	cmd.Stdin = io.MultiReader(strings.NewReader("\\restrict "+randomHex(16)+"\n"), newRestrictFilter(in))
	cmd.Stdout = io.Discard
	stderr := &limitedBuffer{max: 8192}
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return rep, context.Cause(ctx)
		}
		msg := stderr.String()
		switch {
		case strings.Contains(msg, "invalid command \\restrict"):
			return rep, fmt.Errorf("psql %d cannot run in restricted mode (\\restrict needs psql 13.22, 14.19, 15.14, 16.10, 17.6 or later): a plain SQL dump cannot be restored safely with it; upgrade PostgreSQL's client programs", d.bins.Major)
		case strings.Contains(msg, "backslash commands are restricted"):
			return rep, fmt.Errorf("psql: the dump holds a psql meta-command (such as \\! or \\connect), refused: a restore must not run anything on this host: %s", firstLines(msg, err))
		}
		return rep, fmt.Errorf("psql: %s", firstLines(msg, err))
	}
	return rep, nil
}

var (
	copyFromStdin = regexp.MustCompile(`^COPY .* FROM stdin;\s*$`)
	// Lines dropped outside COPY data: the dump's own \restrict, and what
	// pg_restore --no-owner --no-acl leaves out (one line each in pg_dump's
	// plain output, ALTER DEFAULT PRIVILEGES included), which a role
	// without superuser could not run anyway.
	droppedLine = regexp.MustCompile(`^(?:\\(?:un)?restrict\s+\S+|ALTER .* OWNER TO .*;|(?:GRANT|REVOKE) .*;|ALTER DEFAULT PRIVILEGES .*;|SET SESSION AUTHORIZATION .*;)\s*$`)
)

// filterLineMax bounds what restrictFilter holds of a line: a longer line
// (a hostile dump may hold one of gigabytes) is passed on in pieces, never
// buffered whole; it is never one of the short lines dropped.
const filterLineMax = 64 << 10

// restrictFilter passes a plain dump through line by line, dropping its
// \restrict and \unrestrict lines and its owner and privilege statements
// outside COPY data, in bounded memory.
type restrictFilter struct {
	r       *bufio.Reader
	buf     []byte
	inCopy  bool
	midLine bool // passing on the rest of a line longer than filterLineMax
	err     error
}

func newRestrictFilter(r io.Reader) *restrictFilter {
	return &restrictFilter{r: bufio.NewReaderSize(r, filterLineMax)}
}

func (f *restrictFilter) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		line, err := f.r.ReadSlice('\n')
		whole := err == nil || err == io.EOF
		if err != nil && err != bufio.ErrBufferFull {
			f.err = err
		}
		switch {
		case f.midLine:
			f.midLine = !whole
		case !whole:
			f.midLine = true
		case f.inCopy:
			if string(bytesTrimNL(line)) == "\\." {
				f.inCopy = false
			}
		case copyFromStdin.Match(bytesTrimNL(line)):
			f.inCopy = true
		case droppedLine.Match(bytesTrimNL(line)):
			continue
		}
		// line is only valid until the next ReadSlice, which comes after
		// it has been handed on.
		f.buf = line
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

func bytesTrimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
