// Package testenv starts the real services the tests run against: a
// throwaway PostgreSQL cluster, a versitygw S3 server, and a proxy in front of
// it that injects faults. A missing service fails the test (in CI it must not
// be skipped): `make test` installs them all.
package testenv

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/sampledata"
	"github.com/backupverify/backupverify/verifier/pgscratch"
)

// Postgres is a running cluster for a test.
type Postgres struct {
	*pgscratch.Cluster
	Bins pgscratch.Bins
}

// StartPostgres initdb's and starts a cluster removed at the end of the test.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bins, err := pgscratch.FindBins(os.Getenv("BACKUPVERIFY_PG_BIN_DIR"))
	if err != nil {
		t.Fatalf("PostgreSQL is required (run `make test`, which installs it): %v", err)
	}
	dir := shortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgscratch.NewCluster(ctx, bins, filepath.Join(dir, "pg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Remove(ctx); err != nil {
			t.Errorf("remove cluster: %v", err)
		}
		if l := SocketLeftovers(dir); len(l) > 0 {
			t.Errorf("socket folders left in the temporary folder: %v", l)
		}
	})
	return &Postgres{Cluster: c, Bins: bins}
}

// shortTempDir is a temporary folder with a short path: a Unix socket's path
// must stay under about 100 bytes, which t.TempDir() may exceed.
func shortTempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "bv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// CreateSample creates database db with the sample CRM schema and rows.
func (p *Postgres) CreateSample(t testing.TB, db string, rows int) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.Psql(ctx, "postgres", "-c", "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Psql(ctx, db, "-c", sampledata.Schema+sampledata.Fill(rows)); err != nil {
		t.Fatal(err)
	}
}

// Exec runs SQL in db.
func (p *Postgres) Exec(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := p.Psql(context.Background(), db, "-At", "-c", sql)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// Dump runs pg_dump of db in the given format ("c" or "p") into path.
func (p *Postgres) Dump(t testing.TB, db, format, path string, extra ...string) {
	t.Helper()
	args := append([]string{"-d", p.DSN(db, ""), "-F", format, "-f", path}, extra...)
	out, err := exec.Command(p.Bins.Path("pg_dump"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_dump: %v: %s", err, out)
	}
}

// FreePort returns a free loopback TCP port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not accept connections within %s", addr, within)
}

// LookTool finds a program in $PATH or Go's bin folder.
func LookTool(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	gobin := os.Getenv("GOBIN")
	if gobin == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gobin = filepath.Join(strings.TrimSpace(string(out)), "bin")
		}
	}
	if p := filepath.Join(gobin, name); fileExists(p) {
		return p
	}
	t.Fatalf("%s is required and was not found (run `make test`, which installs it; or: %s)", name, install)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Eventually polls cond until it holds, failing the test after within.
func Eventually(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
