package pgscratch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backupverify/backupverify/verifier"
)

// Server is scratch on a dedicated PostgreSQL server reached with an admin DSN.
// Each drill creates its database and a login role of the same name, restores
// as that role (never a superuser), and drops both. Every connection is built
// from the DSN's host, port and TLS settings; who and which database are
// decided here.
type Server struct {
	Bins     Bins
	AdminDSN string
	// Instance is the daemon's instance id: what a drill creates is marked
	// with it, and Sweep drops only what carries it.
	Instance string
	Log      *slog.Logger
	Now      func() time.Time
}

// Location implements verifier.Scratch: the server's host and port, never
// its credentials.
func (s *Server) Location() string {
	ep, err := parseAdminDSN(s.AdminDSN)
	if err != nil {
		return "server"
	}
	host := ep.params["host"]
	if host == "" {
		host = ep.params["hostaddr"]
	}
	return fmt.Sprintf("server %s:%s", host, ep.params["port"])
}

func (s *Server) admin(ctx context.Context) (*pgx.Conn, error) {
	ep, err := parseAdminDSN(s.AdminDSN)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxConfig(ep.connString(ep.adminUser, ep.adminDB), ep.adminPassword, nil)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the scratch server: %w", err)
	}
	return conn, nil
}

// Create implements verifier.Scratch.
func (s *Server) Create(ctx context.Context, target string, info verifier.ArchiveInfo) (verifier.ScratchDB, error) {
	ep, err := parseAdminDSN(s.AdminDSN)
	if err != nil {
		return nil, err
	}
	bins, err := s.Bins.Pick(dumpMajor(info), false)
	if err != nil {
		return nil, fmt.Errorf("the archive was made by pg_dump %s: %w", info.DumpVersion, err)
	}
	name := scratchName(target, s.Now())
	conn, err := s.admin(ctx)
	if err != nil {
		return nil, err
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
	db := &scratchDB{name: name, bins: bins, role: name, password: password,
		restoreConn: ep.connString(name, name), adminConn: ep.connString(ep.adminUser, ep.adminDB),
		adminPassword: ep.adminPassword, dropRole: true, mark: Mark(s.Instance)}
	if err := db.create(ctx, password); err != nil {
		_ = db.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return db, nil
}

// Sweep drops the databases and roles that carry this instance's mark, or
// that a role carrying it owns: what drills of this daemon left behind when
// it was killed. It runs at start-up, before any drill, and the state_dir
// lock keeps a second daemon of the same instance away, so none of them is
// in use. Objects of other instances, and unmarked ones, are left alone.
func (s *Server) Sweep(ctx context.Context) error {
	if s.Instance == "" {
		return errors.New("sweep: no instance id")
	}
	conn, err := s.admin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	mark := Mark(s.Instance)
	var errs []error
	for _, q := range []struct{ list, drop string }{
		{`SELECT datname FROM pg_database d WHERE shobj_description(d.oid, 'pg_database') = $1
		   OR d.datdba IN (SELECT oid FROM pg_roles r WHERE shobj_description(r.oid, 'pg_authid') = $1)`,
			"DROP DATABASE IF EXISTS %s WITH (FORCE)"},
		{"SELECT rolname FROM pg_roles r WHERE shobj_description(r.oid, 'pg_authid') = $1", "DROP ROLE IF EXISTS %s"},
	} {
		rows, err := conn.Query(ctx, q.list, mark)
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
	return errors.Join(errs...)
}
