package pgscratch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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

// scratchName is backupverify_<target>_<unix time>_<random>: the random
// part keeps two drills apart even when their targets' names and start
// times collide, and the target part is cut so that the whole name fits
// PostgreSQL's 63 bytes (which would otherwise cut the random part off).
func scratchName(target string, now time.Time) string {
	t := strings.ReplaceAll(target, "-", "_")
	suffix := fmt.Sprintf("_%d_%s", now.Unix(), randomHex(4))
	if room := 63 - len(DBPrefix) - len(suffix); len(t) > room {
		t = t[:room]
	}
	return DBPrefix + t + suffix
}

// Mark is the comment a drill puts on the databases and roles it creates,
// and the content of an embedded cluster folder's owner file: it names the
// daemon instance (a random id kept in state_dir), so that a start-up sweep
// drops what this instance left behind and nothing else.
func Mark(instance string) string { return "backupverify instance " + instance }

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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// scratchDB is one drill's database.
type scratchDB struct {
	name          string
	bins          Bins
	cluster       *Cluster // embedded only
	role          string
	password      string
	restoreConn   string // libpq keyword/value string, no password
	adminConn     string // likewise, for the admin
	adminPassword string
	dropRole      bool
	version       string
	mark          string // COMMENT on what a server drill creates

	closeOnce sync.Once
	closeErr  error
	closed    func() // after an embedded cluster is removed (a new spare)
}

func (d *scratchDB) Name() string          { return d.name }
func (d *scratchDB) ServerVersion() string { return d.version }

// create makes the restore role and the database it owns, from template0.
// CREATE DATABASE fails if the name exists: a drill never reuses a database.
// On a server, both carry the instance's mark before anything else happens,
// and the admin is granted membership in the role: before PostgreSQL 16 a
// role with only CREATEDB and CREATEROLE must be a member of the owner it
// names in CREATE DATABASE, and to drop the database later.
func (d *scratchDB) create(ctx context.Context, password string) error {
	cfg, err := pgxConfig(d.adminConn, d.adminPassword, nil)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to the scratch server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
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
			// A SCRAM verifier made here: the server (and its log, with
			// log_statement = all) never sees the password itself.
			v, err := scramVerifier(password)
			if err != nil {
				return err
			}
			stmt += " PASSWORD " + quoteLiteral(v)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create role %s: %w", d.role, err)
		}
		if d.mark != "" {
			if _, err := conn.Exec(ctx, "COMMENT ON ROLE "+role+" IS "+quoteLiteral(d.mark)); err != nil {
				return fmt.Errorf("mark role %s: %w", d.role, err)
			}
		}
	}
	if d.dropRole {
		var member bool
		if err := conn.QueryRow(ctx, "SELECT pg_has_role(current_user, $1, 'MEMBER')", d.role).Scan(&member); err != nil {
			return err
		}
		if !member {
			if _, err := conn.Exec(ctx, "GRANT "+role+" TO CURRENT_USER"); err != nil {
				return fmt.Errorf("grant %s to the admin role: %w", d.role, err)
			}
		}
	}
	db := pgx.Identifier{d.name}.Sanitize()
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING 'UTF8'", db, role)); err != nil {
		return fmt.Errorf("create database %s: %w", d.name, err)
	}
	if d.mark != "" {
		if _, err := conn.Exec(ctx, "COMMENT ON DATABASE "+db+" IS "+quoteLiteral(d.mark)); err != nil {
			return fmt.Errorf("mark database %s: %w", d.name, err)
		}
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Close implements verifier.ScratchDB.
func (d *scratchDB) Close(ctx context.Context) error {
	d.closeOnce.Do(func() {
		if d.cluster != nil {
			d.closeErr = d.cluster.Remove(ctx)
			if d.closed != nil {
				d.closed()
			}
			return
		}
		cfg, err := pgxConfig(d.adminConn, d.adminPassword, nil)
		if err != nil {
			d.closeErr = err
			return
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
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

// connect opens a connection to the scratch database as the restore role:
// read-only transactions, a statement timeout, UTC.
func (d *scratchDB) connect(ctx context.Context, timeout time.Duration) (*pgx.Conn, error) {
	cfg, err := pgxConfig(d.restoreConn, d.password, map[string]string{
		"statement_timeout":             strconv.FormatInt(timeout.Milliseconds(), 10),
		"default_transaction_read_only": "on",
		"TimeZone":                      "UTC",
	})
	if err != nil {
		return nil, err
	}
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
