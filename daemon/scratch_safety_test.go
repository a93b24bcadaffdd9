package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/backupverify/backupverify/internal/testenv"
)

// TestDrillIgnoresDaemonEnvironmentAndSpaces: PG* variables in the
// daemon's environment (which libpq and pgx would take as defaults) change
// nothing about a drill; a state_dir and a scratch_dir with a space work;
// and a plain dump with ALTER DEFAULT PRIVILEGES restores like the custom
// dump of the same database, in both scratch modes.
func TestDrillIgnoresDaemonEnvironmentAndSpaces(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 400)
	pg.CreateSample(t, "production", 50)
	pg.Exec(t, "crm", "ALTER DEFAULT PRIVILEGES FOR ROLE backupverify IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC")
	want := counts(t, pg, "crm")
	before := fingerprint(t, pg, "production")
	base := filepath.Join(t.TempDir(), "with space")
	putBackup(t, filepath.Join(base, "plain"), "db.sql", dumpBytes(t, pg, "crm", "p"))
	putBackup(t, filepath.Join(base, "custom"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	state := filepath.Join(base, "state dir")
	scratch := filepath.Join(testenv.ScratchDir(t), "a space")
	// A service that, were it followed, would restore into production as
	// the superuser, read-only, on another server.
	services := filepath.Join(t.TempDir(), "pg_service.conf")
	os.WriteFile(services, []byte("[evil]\nhost=/nonexistent\nport=1\nuser=backupverify\ndbname=production\noptions=-c default_transaction_read_only=on\n"), 0o644)
	for k, v := range map[string]string{
		"PGOPTIONS":     "-c default_transaction_read_only=on",
		"PGUSER":        "backupverify",
		"PGDATABASE":    "production",
		"PGSERVICEFILE": services,
		"PGSERVICE":     "evil",
		"PGSSLMODE":     "require",
	} {
		t.Setenv(k, v)
	}
	yaml := fmt.Sprintf(`state_dir: %q
drills: {scratch_dir: %q}
targets:
  - {name: emb-plain, source: "file://%s/plain/"}
  - {name: emb-custom, source: "file://%s/custom/"}
  - {name: srv-plain, source: "file://%s/plain/", drill: {scratch: "%s"}}
  - {name: srv-custom, source: "file://%s/custom/", drill: {scratch: "%s"}}
`, state, scratch, base, base, base, adminDSN(pg), base, adminDSN(pg))
	_, ds := drillers(t, yaml)
	for _, name := range []string{"emb-plain", "emb-custom", "srv-plain", "srv-custom"} {
		t.Run(name, func(t *testing.T) {
			r := ds[name].Run(context.Background(), "test")
			if !r.OK {
				t.Fatalf("drill failed in %s: %s", r.FailedPhase, r.Error)
			}
			if r.Restore.Tables != len(want) {
				t.Errorf("restored %d tables, want %d", r.Restore.Tables, len(want))
			}
		})
	}
	if l := testenv.Leftovers(t, state, scratch, pg); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
	// The embedded drills' template is kept in state_dir, the daemon's alone.
	if m, _ := filepath.Glob(filepath.Join(state, "template", "pg*", "data", "PG_VERSION")); len(m) != 1 {
		t.Errorf("templates in state_dir: %v, want one", m)
	}
	if fi, err := os.Stat(filepath.Join(state, "template")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state_dir/template: %v %v, want mode 0700", fi, err)
	}
	if after := fingerprint(t, pg, "production"); after != before {
		t.Errorf("production changed:\nbefore %s\nafter  %s", before, after)
	}
	os.RemoveAll(filepath.Dir(scratch))
}
