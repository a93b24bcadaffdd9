package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier"
)

func failedChecks(r verifier.DrillResult) []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	sort.Strings(out)
	return out
}

// TestChecksCatchInjectedFaults restores a real dump with faults injected at
// the source; each fault must fail exactly its own check and no other.
func TestChecksCatchInjectedFaults(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 1000)
	pg.Exec(t, "crm", `
		DELETE FROM opportunities;                                              -- an emptied table
		UPDATE leads SET contact_id = contact_id + 10000000 WHERE id <= 7;      -- orphaned soft references
		CREATE TABLE notes (id int PRIMARY KEY, contact_id bigint);
		INSERT INTO notes VALUES (1, 1), (2, 99999999), (3, NULL);
		ALTER TABLE notes ADD CONSTRAINT notes_contact_fk
		  FOREIGN KEY (contact_id) REFERENCES contacts(id) NOT VALID;           -- a broken FK, restored unvalidated
		UPDATE contacts SET created_at = created_at - interval '3 hours';       -- data older than the backup`)
	dir, state := t.TempDir(), t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	_, ds := drillers(t, fmt.Sprintf(`state_dir: %s
targets:
  - name: crm
    source: file://%s/b/
    checks:
      - count: opportunities
        min: 1
      - count: leads
        min: 1
      - orphans: leads.contact_id -> contacts.id
      - orphans: opportunities.lead_id -> leads.id
      - foreign_keys: true
      - freshness: contacts.created_at
        max_lag: 1h
      - freshness: leads.created_at
        max_lag: 1h
      - name: web_leads_capped
        sql: SELECT count(*) FROM leads WHERE source = 'web'
        max: 10
      - name: leads_exist
        sql: SELECT count(*) FROM leads
        min: 1
      - count: no_such_table
        min: 0
      - name: slow_query
        sql: SELECT count(*) FROM pg_sleep(10)
        max: 5
        timeout: 1s
`, state, dir))
	r := ds["crm"].Run(context.Background(), "test")
	if r.OK || r.FailedPhase != verifier.PhaseChecks {
		t.Fatalf("ok %v phase %q (%s), want a failure in checks", r.OK, r.FailedPhase, r.Error)
	}
	want := []string{"count:no_such_table", "count:opportunities", "foreign_keys", "freshness:contacts.created_at",
		"orphans:leads.contact_id->contacts.id", "slow_query", "web_leads_capped"}
	if got := failedChecks(r); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("failed checks\n got %v\nwant %v", got, want)
	}
	by := map[string]verifier.CheckResult{}
	for _, c := range r.Checks {
		by[c.Name] = c
	}
	for name, want := range map[string]string{
		"count:opportunities":                   "0",
		"orphans:leads.contact_id->contacts.id": "7",
	} {
		if by[name].Actual != want {
			t.Errorf("%s actual %q, want %q", name, by[name].Actual, want)
		}
	}
	if e := by["foreign_keys"].Error; !strings.Contains(e, "notes_contact_fk on notes: 1 row(s) without a parent in contacts") {
		t.Errorf("foreign_keys does not name the broken constraint: %q", e)
	}
	if e := by["count:no_such_table"].Error; !strings.Contains(e, `relation "no_such_table" does not exist`) {
		t.Errorf("missing table error: %q", e)
	}
	if e := by["slow_query"].Error; !strings.Contains(e, "ran past its 1s timeout") {
		t.Errorf("slow query error: %q", e)
	}
	if v := by["freshness:contacts.created_at"].Value; v == nil || *v < 3*3600-120 {
		t.Errorf("freshness lag %v, want about 3h", v)
	}
	if !strings.Contains(r.Error, "7 of 11 checks failed") {
		t.Errorf("drill error %q", r.Error)
	}
}

// TestMaxDropUsesPreviousPassingDrillAcrossRestart: a drill passes with N
// contacts; the daemon restarts; the next backup lost 10% of them, and a
// max_drop of 5% fails it against the N kept in state.
func TestMaxDropUsesPreviousPassingDrillAcrossRestart(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 1000)
	dir, state := t.TempDir(), t.TempDir()
	yaml := fmt.Sprintf(`state_dir: %s
targets:
  - name: crm
    source: file://%s/b/
    checks:
      - count: contacts
        max_drop: 5%%
`, state, dir)
	putBackup(t, filepath.Join(dir, "b"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	_, ds := drillers(t, yaml)
	if r := ds["crm"].Run(context.Background(), "test"); !r.OK {
		t.Fatalf("first drill: %s", r.Error)
	}
	pg.Exec(t, "crm", "DELETE FROM contacts WHERE id % 10 = 0") // 10% fewer
	putBackup(t, filepath.Join(dir, "b"), "db.dump", dumpBytes(t, pg, "crm", "c"))

	_, restarted := drillers(t, yaml) // a new process reads the last passing drill from state
	r := restarted["crm"].Run(context.Background(), "test")
	if r.OK || len(r.Checks) != 1 {
		t.Fatalf("second drill passed with 10%% of contacts gone: %+v", r.Checks)
	}
	c := r.Checks[0]
	if c.Actual != "900" || c.Expected != "drop ≤ 5% from 1000 (≥ 950)" {
		t.Errorf("expected %q actual %q", c.Expected, c.Actual)
	}
}
