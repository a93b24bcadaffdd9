package pgscratch

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// allowedDSNParams are the query parameters a scratch server's admin DSN may
// carry: where the server is and how TLS is checked. Who a drill connects as
// and to which database is decided here, never by the DSN, so user, dbname,
// password, service, passfile, options and the rest are refused.
var allowedDSNParams = []string{
	"host", "hostaddr", "port", "connect_timeout",
	"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir", "sslsni",
	"channel_binding", "require_auth",
}

// endpoint is a scratch server's address and TLS settings, parsed from an
// admin DSN; the admin's user, password and database come apart from it.
type endpoint struct {
	params        map[string]string // host, port, ssl*: passed on verbatim
	adminUser     string
	adminPassword string
	adminDB       string
}

// parseAdminDSN splits a postgres:// URL into the server's endpoint and the
// admin's credentials, refusing any query parameter outside allowedDSNParams (config checks the same list at load).
func parseAdminDSN(dsn string) (endpoint, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return endpoint{}, errors.New("drill.scratch must be a postgres:// URL")
	}
	ep := endpoint{params: map[string]string{}, adminDB: strings.TrimPrefix(u.Path, "/")}
	if u.User != nil {
		ep.adminUser = u.User.Username()
		ep.adminPassword, _ = u.User.Password()
	}
	if h := u.Hostname(); h != "" {
		ep.params["host"] = h
	}
	if p := u.Port(); p != "" {
		ep.params["port"] = p
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return endpoint{}, errors.New("drill.scratch: its query string cannot be parsed")
	}
	var bad []string
	for k, v := range q {
		if !allowedParam(k) {
			bad = append(bad, k)
			continue
		}
		ep.params[k] = v[len(v)-1]
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return endpoint{}, fmt.Errorf("drill.scratch: query parameter(s) %s not allowed: a drill connects as its own role to its own database", strings.Join(bad, ", "))
	}
	if ep.params["host"] == "" && ep.params["hostaddr"] == "" {
		return endpoint{}, errors.New("drill.scratch names no host")
	}
	if ep.params["port"] == "" {
		ep.params["port"] = "5432"
	}
	if _, err := strconv.Atoi(ep.params["port"]); err != nil {
		return endpoint{}, errors.New("drill.scratch: port must be a number")
	}
	if ep.params["sslmode"] == "" {
		ep.params["sslmode"] = "prefer"
	}
	if ep.adminUser == "" {
		return endpoint{}, errors.New("drill.scratch names no admin user (postgres://user@host/db)")
	}
	if ep.adminDB == "" {
		ep.adminDB = "postgres"
	}
	return ep, nil
}

func allowedParam(k string) bool {
	for _, a := range allowedDSNParams {
		if k == a {
			return true
		}
	}
	return false
}

// connString is a libpq keyword/value string for user and db on the
// endpoint: every field explicit, so nothing in the environment (PGUSER,
// PGDATABASE, PGSERVICE) fills a gap. It never holds a password.
func (ep endpoint) connString(user, db string) string {
	keys := make([]string, 0, len(ep.params))
	for k := range ep.params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{"user=" + quoteConnValue(user), "dbname=" + quoteConnValue(db)}
	for _, k := range keys {
		parts = append(parts, k+"="+quoteConnValue(ep.params[k]))
	}
	return strings.Join(parts, " ")
}

// quoteConnValue quotes a value for a libpq keyword/value string.
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// pgxConfig is connString's pgx config with password set and only the
// runtime parameters given: pgx would otherwise take some from PG*
// variables or a service file.
func pgxConfig(connString, password string, runtime map[string]string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	cfg.Password = password
	cfg.Fallbacks = nil
	cfg.RuntimeParams = map[string]string{"application_name": "backupverify"}
	for k, v := range runtime {
		cfg.RuntimeParams[k] = v
	}
	return cfg, nil
}

// toolEnv is the whole environment of pg_restore and psql: none of the
// daemon's variables (no PG* that could redirect a connection or add
// options, no AWS credentials, no trigger token), only what they need.
func toolEnv(password string) []string {
	env := []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C", "TZ=UTC",
		"PGAPPNAME=backupverify", "PGCONNECT_TIMEOUT=30"}
	if h := os.Getenv("HOME"); h != "" {
		// For ~/.postgresql/root.crt, the default sslrootcert.
		env = append(env, "HOME="+h)
	}
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return env
}

// checkIdentity connects exactly as pg_restore and psql will (the same
// connection string and environment, through psql) and refuses to go on
// unless the session is role in database db, and role is no superuser.
// It runs before a byte of the dump is restored.
func (d *scratchDB) checkIdentity(ctx context.Context) error {
	cmd := command(ctx, d.bins.Path("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", d.restoreConn, "-c",
		"SELECT current_user || '|' || current_database() || '|' || (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)::text")
	cmd.Env = toolEnv(d.password)
	stderr := &limitedBuffer{max: 4096}
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("connect as %s to check who the restore runs as: %s", d.role, firstLines(stderr.String(), err))
	}
	return identityOK(strings.TrimSpace(string(out)), d.role, d.name)
}

// identityOK checks psql's "user|database|rolsuper" line.
func identityOK(line, role, db string) error {
	f := strings.Split(line, "|")
	if len(f) != 3 {
		return fmt.Errorf("refusing to restore: cannot tell who the restore would run as (%q)", line)
	}
	if f[0] != role || f[1] != db {
		return fmt.Errorf("refusing to restore: the restore would run as %q in database %q, not %q in %q", f[0], f[1], role, db)
	}
	if f[2] != "false" {
		return fmt.Errorf("refusing to restore: role %q is a superuser", f[0])
	}
	return nil
}
