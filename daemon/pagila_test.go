package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/backupverify/backupverify/internal/testenv"
)

// TestDrillPagila restores a schema nobody here wrote (partitions, triggers,
// enums, domains, a materialized view, functions) from both dump formats.
func TestDrillPagila(t *testing.T) {
	src := testenv.PagilaDir(t)
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	pg.Exec(t, "postgres", "CREATE ROLE postgres")
	pg.Exec(t, "postgres", "CREATE DATABASE pagila")
	for _, f := range []string{"pagila-schema.sql", "pagila-data.sql"} {
		if _, err := pg.Psql(ctx, "pagila", "-f", filepath.Join(src, f)); err != nil {
			t.Fatalf("load %s: %v", f, err)
		}
	}
	dir, state := t.TempDir(), t.TempDir()
	putBackup(t, filepath.Join(dir, "custom"), "pagila.dump", dumpBytes(t, pg, "pagila", "c"))
	putBackup(t, filepath.Join(dir, "plain"), "pagila.sql", dumpBytes(t, pg, "pagila", "p"))
	checks := `    checks:
      - count: rental
        equals: 16044
      - count: payment
        equals: 16049
      - count: customer
        equals: 599
      - orphans: payment.rental_id -> rental.rental_id
      - foreign_keys: true
      - freshness: rental.rental_date
        max_lag: 20000d
      - name: sales_by_film_category_view
        sql: SELECT count(*) FROM sales_by_film_category
        min: 16
`
	_, ds := drillers(t, fmt.Sprintf("state_dir: %s\ntargets:\n  - name: custom\n    source: file://%s/custom/\n    drill: {jobs: 2}\n%s  - name: plain\n    source: file://%s/plain/\n%s",
		state, dir, checks, dir, checks))
	for _, name := range []string{"custom", "plain"} {
		t.Run(name, func(t *testing.T) {
			r := ds[name].Run(ctx, "test")
			if !r.OK {
				t.Fatalf("drill failed in %s: %s", r.FailedPhase, r.Error)
			}
			for _, c := range r.Checks {
				if !c.OK {
					t.Errorf("%s: expected %s actual %s %s", c.Name, c.Expected, c.Actual, c.Error)
				}
			}
			if r.Restore.Tables < 20 {
				t.Errorf("%d tables restored", r.Restore.Tables)
			}
		})
	}
}
