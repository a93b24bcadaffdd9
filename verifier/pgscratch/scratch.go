package pgscratch

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/backupverify/backupverify/verifier"
)

// DBPrefix starts the name of every database and role a drill creates.
const DBPrefix = "backupverify_"

// scratchName is backupverify_<target>_<unix time>.
func scratchName(target string, now time.Time) string {
	return fmt.Sprintf("%s%s_%d", DBPrefix, strings.ReplaceAll(target, "-", "_"), now.Unix())
}

var dumpMajorRE = regexp.MustCompile(`^(\d+)(?:\.(\d+))?`)

// dumpMajor is the major version of the pg_dump that made an archive (9.6 → 9).
func dumpMajor(info verifier.ArchiveInfo) int {
	m := dumpMajorRE.FindStringSubmatch(info.DumpVersion)
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// checkMajor refuses a server older than the archive's pg_dump.
func checkMajor(info verifier.ArchiveInfo, serverMajor int, what string) error {
	if dm := dumpMajor(info); dm > serverMajor {
		return fmt.Errorf("the archive was made by pg_dump %s; %s is PostgreSQL %d, and a restore needs a server at least as new as the pg_dump (install PostgreSQL %d server programs, or point pg_bin_dir or drill.scratch at one)",
			info.DumpVersion, what, serverMajor, dm)
	}
	return nil
}

// Embedded is scratch in a throwaway cluster per drill, initdb'd below Dir,
// listening on a Unix socket only, and removed after the drill.
type Embedded struct {
	Bins Bins
	Dir  string // state_dir/scratch
	Log  *slog.Logger
	Now  func() time.Time
}

// Kind implements verifier.Scratch.
func (e *Embedded) Kind() string { return "embedded" }

// restoreRole is the role restores run as: it owns the scratch database
// and nothing else, and is not a superuser.
const restoreRole = "backupverify_restore"

// Create implements verifier.Scratch.
func (e *Embedded) Create(ctx context.Context, target string, info verifier.ArchiveInfo) (verifier.ScratchDB, error) {
	if err := checkMajor(info, e.Bins.Major, "the embedded scratch cluster ("+e.Bins.Dir+")"); err != nil {
		return nil, err
	}
	name := scratchName(target, e.Now())
	c, err := NewCluster(ctx, e.Bins, filepath.Join(e.Dir, name))
	if err != nil {
		_ = os.RemoveAll(filepath.Join(e.Dir, name))
		return nil, err
	}
	if len(c.Opened) > 0 {
		e.Log.Warn("gave other users search permission (o+x) on folders above state_dir, so that PostgreSQL, running unprivileged, can reach its scratch cluster",
			"folders", c.Opened)
	}
	db := &scratchDB{name: name, bins: e.Bins, cluster: c, role: restoreRole,
		restoreConn: c.DSN(name, restoreRole), adminConn: c.DSN("postgres", "")}
	if err := c.Start(ctx); err != nil {
		_ = c.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	if err := db.create(ctx, ""); err != nil {
		_ = db.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return db, nil
}

// Sweep removes clusters left by drills that did not finish (a killed daemon).
func (e *Embedded) Sweep(ctx context.Context) error {
	entries, err := os.ReadDir(e.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, ent := range entries {
		if !strings.HasPrefix(ent.Name(), DBPrefix) {
			continue
		}
		c := openCluster(e.Bins, filepath.Join(e.Dir, ent.Name()))
		e.Log.Warn("removing a scratch cluster left by an unfinished drill", "dir", c.Dir)
		if err := c.Remove(ctx); err != nil {
			// The server may be gone already; the folders must go regardless.
			errs = append(errs, os.RemoveAll(c.Dir), os.RemoveAll(c.socket))
		}
	}
	return errors.Join(errs...)
}

// Server is scratch on a dedicated PostgreSQL server reached with an admin DSN.
// Each drill creates its database and a login role of the same name, restores
// as that role (never a superuser), and drops both.
type Server struct {
	Bins     Bins
	AdminDSN string
	Log      *slog.Logger
	Now      func() time.Time
}

// Kind implements verifier.Scratch: the server's host, never its credentials.
func (s *Server) Kind() string {
	cfg, err := pgx.ParseConfig(s.AdminDSN)
	if err != nil {
		return "server"
	}
	return fmt.Sprintf("server %s:%d", cfg.Host, cfg.Port)
}

// Create implements verifier.Scratch.
func (s *Server) Create(ctx context.Context, target string, info verifier.ArchiveInfo) (verifier.ScratchDB, error) {
	name := scratchName(target, s.Now())
	conn, err := pgx.Connect(ctx, s.AdminDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to the scratch server: %w", err)
	}
	var num int
	err = conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num)
	conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("scratch server version: %w", err)
	}
	if err := checkMajor(info, num/10000, "the scratch server"); err != nil {
		return nil, err
	}
	password := randomHex(24)
	restoreConn, err := roleDSN(s.AdminDSN, name, name)
	if err != nil {
		return nil, err
	}
	db := &scratchDB{name: name, bins: s.Bins, role: name, password: password,
		restoreConn: restoreConn, adminConn: s.AdminDSN, dropRole: true}
	if err := db.create(ctx, password); err != nil {
		_ = db.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return db, nil
}

// Sweep drops databases and roles named backupverify_<target>_<digits> that an
// unfinished drill of one of targets left behind.
func (s *Server) Sweep(ctx context.Context, targets []string) error {
	conn, err := pgx.Connect(ctx, s.AdminDSN)
	if err != nil {
		return fmt.Errorf("connect to the scratch server: %w", err)
	}
	defer conn.Close(ctx)
	var errs []error
	for _, t := range targets {
		pattern := "^" + regexp.QuoteMeta(DBPrefix+strings.ReplaceAll(t, "-", "_")) + `_[0-9]+$`
		for _, q := range []struct{ list, drop string }{
			{"SELECT datname FROM pg_database WHERE datname ~ $1", "DROP DATABASE IF EXISTS %s WITH (FORCE)"},
			{"SELECT rolname FROM pg_roles WHERE rolname ~ $1", "DROP ROLE IF EXISTS %s"},
		} {
			rows, err := conn.Query(ctx, q.list, pattern)
			if err != nil {
				return err
			}
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			for _, n := range names {
				s.Log.Warn("dropping a scratch leftover of an unfinished drill", "name", n)
				if _, err := conn.Exec(ctx, fmt.Sprintf(q.drop, pgx.Identifier{n}.Sanitize())); err != nil {
					errs = append(errs, fmt.Errorf("drop %s: %w", n, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// roleDSN is the admin DSN with another user and database; its password is
// passed apart (PGPASSWORD), never in the connection string.
func roleDSN(admin, user, db string) (string, error) {
	if u, err := url.Parse(admin); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.User = url.User(user)
		u.Path = "/" + db
		return u.String(), nil
	}
	return "", errors.New("drill.scratch must be a postgres:// URL")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// scratchDB is one drill's database.
type scratchDB struct {
	name        string
	bins        Bins
	cluster     *Cluster // embedded only
	role        string
	password    string
	restoreConn string
	adminConn   string
	dropRole    bool
	version     string

	closeOnce sync.Once
	closeErr  error
}

func (d *scratchDB) Name() string          { return d.name }
func (d *scratchDB) ServerVersion() string { return d.version }

// create makes the restore role and the database it owns, from template0.
// CREATE DATABASE fails if the name exists: a drill never reuses a database.
func (d *scratchDB) create(ctx context.Context, password string) error {
	conn, err := pgx.Connect(ctx, d.adminConn)
	if err != nil {
		return fmt.Errorf("connect to the scratch server: %w", err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT split_part(current_setting('server_version'), ' ', 1)").Scan(&d.version); err != nil {
		return err
	}
	role := pgx.Identifier{d.role}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", d.role).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		stmt := "CREATE ROLE " + role + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
		if password != "" {
			// Sent as a literal over the admin connection, never logged.
			stmt += " PASSWORD " + quoteLiteral(password)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create role %s: %w", d.role, err)
		}
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING 'UTF8'",
		pgx.Identifier{d.name}.Sanitize(), role)); err != nil {
		return fmt.Errorf("create database %s: %w", d.name, err)
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Close implements verifier.ScratchDB.
func (d *scratchDB) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		if d.cluster != nil {
			d.closeErr = d.cluster.Remove(ctx)
			return
		}
		conn, err := pgx.Connect(ctx, d.adminConn)
		if err != nil {
			d.closeErr = fmt.Errorf("connect to drop %s: %w", d.name, err)
			return
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)")
		if err != nil {
			d.closeErr = fmt.Errorf("drop database %s: %w", d.name, err)
			return
		}
		if d.dropRole {
			if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{d.role}.Sanitize()); err != nil {
				d.closeErr = fmt.Errorf("drop role %s: %w", d.role, err)
			}
		}
	})
	return d.closeErr
}

func (d *scratchDB) env() []string {
	env := os.Environ()
	if d.password != "" {
		env = append(env, "PGPASSWORD="+d.password)
	}
	return append(env, "PGAPPNAME=backupverify", "PGCONNECT_TIMEOUT=30")
}

// Restore implements verifier.ScratchDB.
func (d *scratchDB) Restore(ctx context.Context, path string, info verifier.ArchiveInfo, opt verifier.RestoreOptions) (verifier.RestoreReport, error) {
	var rep verifier.RestoreReport
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
	cmd.Env = d.env()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return rep, err
	}
	if err := cmd.Start(); err != nil {
		return rep, fmt.Errorf("start pg_restore: %w", err)
	}
	errs := parseRestoreErrors(stderr)
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
		return rep, fmt.Errorf("pg_restore: %w", waitErr)
	}
	return rep, nil
}

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
	cmd.Env = d.env()
	cmd.Stdin = io.MultiReader(strings.NewReader("\\restrict "+randomHex(16)+"\n"), &restrictFilter{r: bufio.NewReaderSize(in, 64<<10)})
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
	// plain output), which a role without superuser could not run anyway.
	droppedLine = regexp.MustCompile(`^(?:\\(?:un)?restrict\s+\S+|ALTER .* OWNER TO .*;|(?:GRANT|REVOKE) .*;|SET SESSION AUTHORIZATION .*;)\s*$`)
)

// restrictFilter passes a plain dump through line by line, dropping its
// \restrict and \unrestrict lines and its owner and privilege statements
// outside COPY data.
type restrictFilter struct {
	r      *bufio.Reader
	buf    []byte
	inCopy bool
	err    error
}

func (f *restrictFilter) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		line, err := f.r.ReadBytes('\n')
		f.err = err
		switch {
		case f.inCopy:
			if string(bytesTrimNL(line)) == "\\." {
				f.inCopy = false
			}
		case copyFromStdin.Match(bytesTrimNL(line)):
			f.inCopy = true
		case droppedLine.Match(bytesTrimNL(line)):
			continue
		}
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

// connect opens a connection to the scratch database as the restore role:
// read-only transactions, a statement timeout, UTC.
func (d *scratchDB) connect(ctx context.Context, timeout time.Duration) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(d.restoreConn)
	if err != nil {
		return nil, err
	}
	cfg.Password = d.password
	cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(timeout.Milliseconds(), 10)
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.RuntimeParams["application_name"] = "backupverify"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", d.name, err)
	}
	return conn, nil
}

// Query implements verifier.ScratchDB.
func (d *scratchDB) Query(ctx context.Context, sql string, timeout time.Duration) (float64, bool, error) {
	conn, err := d.connect(ctx, timeout)
	if err != nil {
		return 0, false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v *float64
	if err := conn.QueryRow(ctx, "SELECT ("+sql+")::float8").Scan(&v); err != nil {
		return 0, false, describePG(err, timeout)
	}
	if v == nil {
		return 0, false, nil
	}
	return *v, true, nil
}

// Rows implements verifier.ScratchDB.
func (d *scratchDB) Rows(ctx context.Context, sql string, timeout time.Duration) ([][]string, error) {
	conn, err := d.connect(ctx, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, describePG(err, timeout)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = fmt.Sprint(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, describePG(err, timeout)
	}
	return out, nil
}

// describePG makes a statement timeout say so plainly.
func describePG(err error, timeout time.Duration) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "57014" {
		return fmt.Errorf("query ran past its %s timeout (canceled)", timeout)
	}
	if errors.As(err, &pe) {
		return fmt.Errorf("%s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	return err
}
