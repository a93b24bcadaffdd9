package pgscratch

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
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
// its TOC entry; only entries named in allow_errors are tolerated. It fails
// when pg_restore died by a signal, or when its own count of errors ignored
// disagrees with the errors read from its output.
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
	out := parseRestoreOutput(io.TeeReader(stderr, tail))
	_, _ = io.Copy(tail, stderr)
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return rep, context.Cause(ctx)
	}
	rep.IgnoredErrors, err = judgeRestore(out, waitErr, tail.String(), opt.AllowErrors)
	return rep, err
}

// judgeRestore decides a pg_restore run from its parsed output and exit
// (stderrTail: the end of its stderr, for an exit without a parsed error):
// the errors allow_errors accepts, or why the restore failed.
func judgeRestore(out restoreOutput, waitErr error, stderrTail string, allow []string) ([]string, error) {
	var ignored, fatal []string
	for _, e := range out.errors {
		if allowed(e.entry, allow) {
			ignored = append(ignored, e.String())
		} else {
			fatal = append(fatal, e.String())
		}
	}
	var exit *exec.ExitError
	if errors.As(waitErr, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ignored, fmt.Errorf("pg_restore was killed by signal %s after %d error(s): the restore is incomplete", ws.Signal(), len(out.errors))
		}
	}
	if len(fatal) > 0 {
		return ignored, fmt.Errorf("pg_restore: %d error(s) not allowed by drill.allow_errors: %s", len(fatal), summarize(fatal))
	}
	if waitErr != nil && len(out.errors) == 0 {
		return ignored, fmt.Errorf("pg_restore: %s", firstLines(stderrTail, waitErr))
	}
	if n := len(out.errors); n > 0 {
		// PostgreSQL counts an error of a parallel worker's item twice (15
		// here: 6 errors printed, 9 counted with --jobs 2): a count up to
		// that is consistent; one above it, or none at all, means errors
		// were printed in a form this parser did not read.
		if out.ignored < 0 {
			return ignored, fmt.Errorf("pg_restore printed %d error(s) but no count of errors ignored: its output was cut short", n)
		}
		if out.ignored < n || out.ignored > n+out.parallelErrors {
			return ignored, fmt.Errorf("pg_restore says it ignored %d error(s) but %d were read from its output: refusing to pass a restore whose errors are not all known", out.ignored, n)
		}
	}
	return ignored, nil
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

// tocEntry is a TOC entry as pg_restore names it: "from TOC entry 217;
// 1259 16418 TABLE users postgres" is kind TABLE, name users, owner postgres.
type tocEntry struct {
	kind  string // TABLE, TABLE DATA, COMMENT, FK CONSTRAINT...
	name  string // pg_dump's tag: "users", "users users_pkey", "EXTENSION pg_stat_statements"
	owner string // "" for none
}

func (e tocEntry) String() string {
	if e.name == "" {
		return e.kind
	}
	return e.kind + " " + e.name
}

// restoreError is one error pg_restore reported, with its TOC entry. Only
// the message is kept: DETAIL and CONTEXT lines (which carry row data, such
// as "Key (email)=(alice@example.com)") and "Command was:" never leave the
// drill.
type restoreError struct {
	entry *tocEntry // nil when the error is not tied to an entry
	msg   string
}

func (e restoreError) String() string {
	if e.entry == nil {
		return e.msg
	}
	return e.entry.String() + ": " + e.msg
}

// restoreOutput is what pg_restore --verbose printed on stderr.
type restoreOutput struct {
	errors []restoreError
	// parallelErrors counts the errors printed inside the main parallel loop.
	parallelErrors int
	// ignored is pg_restore's own "errors ignored on restore: N"; -1 when absent.
	ignored int
}

var (
	tocEntryRE = regexp.MustCompile(`^pg_restore: from TOC entry \d+; \d+ \d+ (.*)$`)
	ignoredRE  = regexp.MustCompile(`^pg_restore: warning: errors ignored on restore: (\d+)\s*$`)
)

// parseRestoreOutput reads pg_restore --verbose output and keeps the errors.
func parseRestoreOutput(r io.Reader) restoreOutput {
	out := restoreOutput{ignored: -1}
	var entry *tocEntry
	parallel := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := tocEntryRE.FindStringSubmatch(line); m != nil {
			e := parseTOCEntry(m[1])
			entry = &e
			continue
		}
		if msg, ok := strings.CutPrefix(line, "pg_restore: error: "); ok {
			msg = strings.TrimPrefix(msg, "could not execute query: ")
			// A carriage return ends the message as a newline would:
			// what follows it on the line is not pg_restore's error text
			// and may be row data.
			msg, _, _ = strings.Cut(msg, "\r")
			out.errors = append(out.errors, restoreError{entry: entry, msg: msg})
			if parallel {
				out.parallelErrors++
			}
			entry = nil
			continue
		}
		if m := ignoredRE.FindStringSubmatch(line); m != nil {
			out.ignored, _ = strconv.Atoi(m[1])
			continue
		}
		switch {
		case line == "pg_restore: entering main parallel loop":
			parallel = true
		case line == "pg_restore: finished main parallel loop":
			parallel = false
		case strings.HasPrefix(line, "pg_restore: creating "), strings.HasPrefix(line, "pg_restore: processing "):
			entry = nil
		}
	}
	return out
}

// tocKinds are the TOC entry kinds of more than one word (pg_dump.c's desc
// strings); a kind not listed here is its first word.
var tocKinds = []string{
	"ACCESS METHOD", "BLOB DATA", "CHECK CONSTRAINT", "DATABASE PROPERTIES", "DEFAULT ACL", "EVENT TRIGGER",
	"FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "INDEX ATTACH", "LARGE OBJECT",
	"MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "OPERATOR CLASS", "OPERATOR FAMILY", "PROCEDURAL LANGUAGE",
	"PUBLICATION TABLES IN SCHEMA", "PUBLICATION TABLE", "ROW SECURITY", "SECURITY LABEL", "SEQUENCE OWNED BY",
	"SEQUENCE SET", "SHELL TYPE", "SUBSCRIPTION TABLE", "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH CONFIGURATION",
	"TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "USER MAPPING",
}

// splitKind splits "KIND rest" at the end of the longest known kind.
func splitKind(s string) (kind, rest string) {
	for _, k := range tocKinds {
		if r, ok := strings.CutPrefix(s, k+" "); ok {
			return k, r
		}
		if s == k {
			return k, ""
		}
	}
	kind, rest, _ = strings.Cut(s, " ")
	return kind, rest
}

// parseTOCEntry splits "KIND NAME OWNER" as pg_restore prints it: "%s %s %s"
// of the entry's desc, tag and owner, the owner being "" (the line then ends
// with a space) or "(no owner)".
func parseTOCEntry(s string) tocEntry {
	var e tocEntry
	e.kind, s = splitKind(s)
	switch {
	case strings.HasSuffix(s, " (no owner)"):
		s = strings.TrimSuffix(s, " (no owner)")
	case strings.HasSuffix(s, " "):
		s = strings.TrimSuffix(s, " ")
	default:
		if i := strings.LastIndexByte(s, ' '); i >= 0 {
			s, e.owner = s[:i], s[i+1:]
		}
	}
	e.name = s
	return e
}

// dependentKinds are TOC entries about another object, whose name is that
// object's "KIND NAME".
var dependentKinds = map[string]bool{"COMMENT": true, "ACL": true, "SECURITY LABEL": true}

// allowed matches an error's TOC entry against drill.allow_errors. An item
// "KIND NAME" allows the entry of that kind whose name starts with NAME's
// words ("CONSTRAINT users" allows every constraint of table users; a kind
// alone, such as "EXTENSION", allows every entry of that kind), and the
// COMMENT, ACL and SECURITY LABEL entries on such an object:
// "EXTENSION pg_stat_statements" allows "COMMENT EXTENSION pg_stat_statements".
// An error tied to no entry is never allowed.
func allowed(e *tocEntry, allow []string) bool {
	if e == nil {
		return false
	}
	for _, a := range allow {
		a = strings.Join(strings.Fields(a), " ")
		if a == "" {
			continue
		}
		if matchEntry(*e, a) {
			return true
		}
		if dependentKinds[e.kind] && matchEntry(parseTOCEntry(e.name+" "), a) {
			return true
		}
	}
	return false
}

func matchEntry(e tocEntry, item string) bool {
	kind, name := splitKind(item)
	if kind != e.kind {
		return false
	}
	return name == "" || e.name == name || strings.HasPrefix(e.name, name+" ")
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
