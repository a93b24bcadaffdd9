package pgscratch_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/pgscratch"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var custom15 = verifier.ArchiveInfo{Format: verifier.FormatCustom, DumpVersion: "15.0"}

// requireMembership sets the test cluster so that every role but its
// superuser logs in with a SCRAM password over the socket, and logs every
// statement.
func passwordAuth(t *testing.T, pg *testenv.Postgres) {
	t.Helper()
	hba := "local all backupverify trust\nlocal all all scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(pg.Dir, "data", "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, "postgres", "ALTER SYSTEM SET log_statement = 'all'")
	pg.Exec(t, "postgres", "SELECT pg_reload_conf()")
}

// TestServerScratchLeastPrivilege: an admin with only CREATEDB and
// CREATEROLE (not a superuser) runs a whole drill on PostgreSQL 15; the
// drill role's password never reaches the server's log (log_statement =
// all), and logging in with it works (the SCRAM verifier is right); the
// sweep drops what this instance left and nothing else.
func TestServerScratchLeastPrivilege(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 300)
	dump := filepath.Join(t.TempDir(), "crm.dump")
	pg.Dump(t, "crm", "c", dump)
	passwordAuth(t, pg)
	pg.Exec(t, "postgres", "CREATE ROLE verifier LOGIN CREATEDB CREATEROLE PASSWORD 'adminpw'")
	dsn := fmt.Sprintf("postgres://verifier:adminpw@/postgres?host=%s&port=5432", pg.SocketDir())
	ctx := context.Background()
	const me, other = "11111111111111111111111111111111", "22222222222222222222222222222222"
	srv := &pgscratch.Server{Bins: pg.Bins, AdminDSN: dsn, Instance: me, Log: quiet(), Now: time.Now}
	db, err := srv.Create(ctx, "crm", custom15)
	if err != nil {
		t.Fatalf("create with a CREATEDB CREATEROLE admin: %v", err)
	}
	rep, err := db.Restore(ctx, dump, custom15, verifier.RestoreOptions{Jobs: 2})
	if err != nil || rep.Tables != 3 {
		t.Fatalf("restore: %v, %d tables", err, rep.Tables)
	}
	if n, _, err := db.Query(ctx, "SELECT count(*) FROM contacts", time.Minute); err != nil || n != 300 {
		t.Fatalf("count: %v %v", n, err)
	}
	log, _ := os.ReadFile(filepath.Join(pg.Dir, "server.log"))
	if pw := pgscratch.Password(db); strings.Contains(string(log), pw) {
		t.Errorf("the drill role's password is in the server's log")
	}
	if !strings.Contains(string(log), "SCRAM-SHA-256$4096:") {
		t.Errorf("the server's log does not show the role created with a verifier (is log_statement on?)")
	}

	// Leftovers of a killed drill of this instance, of another instance,
	// and an unmarked database with a drill's name.
	otherSrv := &pgscratch.Server{Bins: pg.Bins, AdminDSN: dsn, Instance: other, Log: quiet(), Now: time.Now}
	odb, err := otherSrv.Create(ctx, "crm", custom15)
	if err != nil {
		t.Fatal(err)
	}
	defer odb.Close(ctx)
	pg.Exec(t, "postgres", "CREATE DATABASE backupverify_crm_1767000000_deadbeef")
	if err := srv.Sweep(ctx); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	got := pg.Exec(t, "postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'backupverify%'")
	want := strings.Join(sorted("backupverify_crm_1767000000_deadbeef", odb.Name()), ",")
	if got != want {
		t.Errorf("after the sweep: %s, want %s (only this instance's %s dropped)", got, want, db.Name())
	}
	if r := pg.Exec(t, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = '"+db.Name()+"'"); r != "0" {
		t.Errorf("the sweep left the drill role")
	}
	if err := db.Close(ctx); err != nil {
		t.Errorf("close after the sweep: %v", err)
	}
	pg.Exec(t, "postgres", "DROP DATABASE backupverify_crm_1767000000_deadbeef")
}

func sorted(a, b string) []string {
	if a > b {
		return []string{b, a}
	}
	return []string{a, b}
}

// TestRestoreRefusesASuperuserSession: the check before restoring sees
// who pg_restore would run as; a session that is a superuser (here a
// scratch server whose drill role was made one behind the daemon's back)
// stops the drill before a byte is restored.
func TestRestoreRefusesASuperuserSession(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 10)
	dump := filepath.Join(t.TempDir(), "crm.dump")
	pg.Dump(t, "crm", "c", dump)
	srv := &pgscratch.Server{Bins: pg.Bins, AdminDSN: fmt.Sprintf("postgres://backupverify@/postgres?host=%s", pg.SocketDir()),
		Instance: "33333333333333333333333333333333", Log: quiet(), Now: time.Now}
	ctx := context.Background()
	db, err := srv.Create(ctx, "crm", custom15)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	pg.Exec(t, "postgres", "ALTER ROLE "+db.Name()+" SUPERUSER")
	_, err = db.Restore(ctx, dump, custom15, verifier.RestoreOptions{Jobs: 1})
	if err == nil || !strings.Contains(err.Error(), "is a superuser") {
		t.Fatalf("restore as a superuser: %v", err)
	}
	if n := pg.Exec(t, db.Name(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); n != "0" {
		t.Errorf("%s tables restored before the check", n)
	}
}

// TestPgRestoreHugeStderrDoesNotBlock: an error whose "Command was:" line
// is 6 MiB (past the parser's 4 MiB line limit) fails the restore at once
// with that error, instead of leaving pg_restore blocked on a full pipe
// until the drill's deadline.
func TestPgRestoreHugeStderrDoesNotBlock(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE src")
	sql := filepath.Join(t.TempDir(), "f.sql")
	body := strings.Repeat("x", 6<<20)
	os.WriteFile(sql, []byte("CREATE FUNCTION f() RETURNS int LANGUAGE sql LEAKPROOF AS $$ SELECT 1 /* "+body+" */ $$;\n"), 0o644)
	if out, err := pg.Psql(context.Background(), "src", "-f", sql); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	dump := filepath.Join(t.TempDir(), "src.dump")
	pg.Dump(t, "src", "c", dump)
	srv := &pgscratch.Server{Bins: pg.Bins, AdminDSN: fmt.Sprintf("postgres://backupverify@/postgres?host=%s", pg.SocketDir()),
		Instance: "44444444444444444444444444444444", Log: quiet(), Now: time.Now}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	db, err := srv.Create(ctx, "src", custom15)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	start := time.Now()
	_, err = db.Restore(ctx, dump, custom15, verifier.RestoreOptions{Jobs: 1})
	if err == nil || !strings.Contains(err.Error(), "leakproof") || ctx.Err() != nil {
		t.Fatalf("restore: %v (context: %v)", err, ctx.Err())
	}
	t.Logf("failed in %s: %.200s", time.Since(start).Round(time.Millisecond), err)
}

// TestEmbeddedRootModeGivesNothingAway: as root, the cluster runs as
// another user with none of the daemon's environment; that user owns
// nothing the sweep reads; no folder above the state is opened; and the
// sweep removes only this instance's clusters, following a socket record
// only to a socket folder of ours.
func TestEmbeddedRootModeGivesNothingAway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("root mode needs root")
	}
	for k, v := range map[string]string{"AWS_SECRET_ACCESS_KEY": "aws-secret-in-env", "BACKUPVERIFY_TRIGGER_TOKEN": "token-in-env",
		"PGUSER": "postgres", "PGOPTIONS": "-c work_mem=64kB"} {
		t.Setenv(k, v)
	}
	bins, err := pgscratch.FindBins(os.Getenv("BACKUPVERIFY_PG_BIN_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	private := t.TempDir() // 0700, like a state_dir's parents may be
	before, _ := os.Stat(private)
	scratch := filepath.Join(testenv.ScratchDir(t), "with space")
	const me = "55555555555555555555555555555555"
	e := &pgscratch.Embedded{Bins: bins, Dir: scratch, Instance: me, Log: quiet(), Now: time.Now}
	ctx := context.Background()
	db, err := e.Create(ctx, "t", custom15)
	if err != nil {
		t.Fatal(err)
	}
	c := pgscratch.ClusterOf(db)
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", c.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"aws-secret-in-env", "token-in-env", "PGUSER", "PGOPTIONS", "AWS_", "HOME=/root"} {
		if strings.Contains(string(environ), leak) {
			t.Errorf("the scratch server's environment holds %q", leak)
		}
	}
	var st syscall.Stat_t
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.PID()))
	if strings.Contains(string(status), "\nUid:\t0\t") {
		t.Errorf("the scratch server runs as root")
	}
	for _, p := range []string{c.Dir, filepath.Join(c.Dir, "owner")} {
		if err := syscall.Lstat(p, &st); err != nil || st.Uid != 0 {
			t.Errorf("%s: owner %d, want root (err %v)", p, st.Uid, err)
		}
	}
	if fi, _ := os.Stat(c.Dir); fi.Mode().Perm() != 0o711 {
		t.Errorf("cluster folder mode %v", fi.Mode())
	}
	if after, _ := os.Stat(private); after.Mode() != before.Mode() {
		t.Errorf("a folder outside the scratch folder changed mode: %v → %v", before.Mode(), after.Mode())
	}
	if n, _, err := db.Query(ctx, "SELECT 1", time.Minute); err != nil || n != 1 {
		t.Fatalf("query: %v", err)
	}

	// A killed daemon leaves this cluster. Its socket record, forged to
	// name another folder, is not followed.
	victim := filepath.Join(private, "victim")
	os.MkdirAll(victim, 0o755)
	record := filepath.Join(c.Dir, "socket.path")
	os.WriteFile(record, []byte(victim), 0o600)
	// And another instance's cluster folder sits beside it.
	foreign := filepath.Join(scratch, "backupverify_t_1_cafebabe")
	os.MkdirAll(foreign, 0o711)
	os.WriteFile(filepath.Join(foreign, "owner"), []byte(pgscratch.Mark("66666666666666666666666666666666")), 0o600)
	if err := e.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("the sweep followed a forged socket record: %v", err)
	}
	if _, err := os.Stat(c.Dir); err != nil {
		t.Fatalf("the cluster with a forged record should be left alone: %v", err)
	}
	// The record written by the cluster user (had it been able to) is refused too.
	os.WriteFile(record, []byte(filepath.Join(os.TempDir(), "bvsock-x")), 0o600)
	cred, _, _ := pgscratch.ClusterUser("")
	os.Lchown(record, int(cred.Uid), int(cred.Gid))
	e.Sweep(ctx)
	if _, err := os.Stat(c.Dir); err != nil {
		t.Fatalf("the cluster with a record the cluster user owns should be left alone: %v", err)
	}
	os.Remove(record)
	if err := e.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); err == nil {
		t.Errorf("the sweep left this instance's cluster")
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("the sweep removed another instance's cluster: %v", err)
	}
	os.RemoveAll(foreign)
	db.Close(ctx)
	os.RemoveAll(filepath.Dir(scratch))
}

// TestEmbeddedClusterTakesItsMemorySettings: the settings ScratchSettings
// derives from a large memory limit reach the running cluster, with
// shared_buffers held at 128 MiB.
func TestEmbeddedClusterTakesItsMemorySettings(t *testing.T) {
	bins, err := pgscratch.FindBins(os.Getenv("BACKUPVERIFY_PG_BIN_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	settings := pgscratch.ScratchSettings(64<<30, 2, 1)
	e := &pgscratch.Embedded{Bins: bins, Dir: testenv.ScratchDir(t), Instance: "abababababababababababababababab",
		Log: quiet(), Now: time.Now, Settings: settings}
	ctx := context.Background()
	db, err := e.Create(ctx, "t", custom15)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	for name, want := range map[string]float64{"shared_buffers": 128 << 20, "maintenance_work_mem": 1 << 30} {
		got, _, err := db.Query(ctx, "SELECT pg_size_bytes(current_setting('"+name+"'))::float8", time.Minute)
		if err != nil || got != want {
			t.Errorf("%s = %v bytes (err %v), want %v (settings %v)", name, got, err, want, settings)
		}
	}
}

// TestNewClusterFailureLeavesNoSocketFolder: a cluster whose initdb fails
// removes its short socket folder (bvsock-*) from the temporary folder.
func TestNewClusterFailureLeavesNoSocketFolder(t *testing.T) {
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "initdb"), []byte("#!/bin/sh\necho initdb fails >&2\nexit 1\n"), 0o755)
	parent := filepath.Join(t.TempDir(), strings.Repeat("deep", 20))
	_, err := pgscratch.NewCluster(context.Background(), pgscratch.Bins{Dir: bin, Major: 15}, filepath.Join(parent, "c"))
	if err == nil || !strings.Contains(err.Error(), "initdb fails") {
		t.Fatalf("NewCluster: %v", err)
	}
	if l := testenv.SocketLeftovers(parent); len(l) > 0 {
		t.Errorf("left %v", l)
	}
	if _, err := os.Stat(filepath.Join(parent, "c")); err == nil {
		t.Errorf("left the cluster folder")
	}
}
