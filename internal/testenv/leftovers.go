package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupverify/backupverify/verifier/pgscratch"
)

// Leftovers lists what drills of the daemon owning stateDir may leave
// behind: downloaded files; embedded cluster folders in scratchDir (""
// for the default) that carry its instance's mark; its short socket
// folders (bvsock-*) in the system temporary folder; and, given pg,
// databases and roles named backupverify_* there.
func Leftovers(t testing.TB, stateDir, scratchDir string, pg *Postgres) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(filepath.Join(stateDir, "tmp"))
	for _, e := range ents {
		out = append(out, "tmp/"+e.Name())
	}
	if scratchDir == "" {
		scratchDir = pgscratch.DefaultScratchDir(stateDir)
	}
	b, _ := os.ReadFile(filepath.Join(stateDir, "instance-id"))
	instance := strings.TrimSpace(string(b))
	ents, _ = os.ReadDir(scratchDir)
	for _, e := range ents {
		owner, _ := os.ReadFile(filepath.Join(scratchDir, e.Name(), "owner"))
		// Without an instance id yet, every folder counts.
		if instance == "" || string(owner) == pgscratch.Mark(instance) {
			out = append(out, filepath.Join(scratchDir, e.Name()))
		}
	}
	if instance != "" {
		socks, _ := filepath.Glob(filepath.Join(os.TempDir(), "bvsock-"+instance[:12]+"-*"))
		out = append(out, socks...)
	}
	if pg != nil {
		for _, q := range []string{
			"SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'backupverify\\_%'",
			"SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'backupverify\\_%' AND rolname <> 'backupverify_restore'",
		} {
			if s := pg.Exec(t, "postgres", q); s != "" {
				out = append(out, strings.Split(s, ",")...)
			}
		}
	}
	return out
}

// SocketLeftovers lists the short socket folders (bvsock-*) of clusters
// made below parent that are still in the system temporary folder.
func SocketLeftovers(parent string) []string {
	m, _ := filepath.Glob(filepath.Join(os.TempDir(), "bvsock-"+pgscratch.SocketTag(parent)+"-*"))
	return m
}

// ScratchDir is a short folder for embedded scratch clusters, removed at the
// end of the test: in the system temporary folder, so that a cluster user
// can reach it when the test runs as root.
func ScratchDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bvs")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A spare cluster (.spare-*, made ahead for the next drill) may stay.
		l, _ := os.ReadDir(filepath.Join(dir, "scratch"))
		var left []string
		for _, e := range l {
			if !strings.HasPrefix(e.Name(), ".spare-") {
				left = append(left, e.Name())
			}
		}
		if len(left) > 0 {
			t.Errorf("scratch folder %s not empty at the end of the test: %v", dir, left)
		}
		os.RemoveAll(dir)
	})
	return filepath.Join(dir, "scratch")
}

// Main runs a package's tests (from TestMain) and then removes the spare
// scratch clusters its drills made (pgscratch.RemoveSpares): as root they
// are in /var/tmp/backupverify, which outlives the tests' state_dir.
func Main(m *testing.M) {
	code := m.Run()
	pgscratch.RemoveSpares()
	os.Exit(code)
}
