package pgscratch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/backupverify/backupverify/verifier"
)

// Server is scratch on a dedicated PostgreSQL server reached with an admin DSN.
// Each drill creates its database and a login role of the same name, restores
// as that role (never a superuser), and drops both.
type Server struct {
	Bins     Bins
	AdminDSN string
	Log      *slog.Logger
	Now      func() time.Time
}

// Location implements verifier.Scratch: the server's host and port, never
// its credentials.
func (s *Server) Location() string {
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
