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
