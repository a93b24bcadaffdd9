package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/report"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/pgscratch"
	"github.com/backupverify/backupverify/web"
)

// Shared test helpers (internal/testenv).
var (
	putBackup = testenv.PutBackup
	testLog   = testenv.Logger
	get       = testenv.Get
	waitUntil = testenv.Eventually
)

func dumpBytes(t *testing.T, pg *testenv.Postgres, db, format string, extra ...string) []byte {
	t.Helper()
	return pg.DumpBytes(t, db, format, extra...)
}

func adminDSN(pg *testenv.Postgres) string {
	return fmt.Sprintf("postgres://%s@/postgres?host=%s&port=5432&sslmode=disable", pg.Superuser, pg.SocketDir())
}

func drillers(t *testing.T, yaml string) (*config.Config, map[string]*verifier.Driller) {
	t.Helper()
	c, err := config.Parse([]byte(yaml), os.Getenv)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ds, err := NewDrillers(context.Background(), c, "", testLog(t), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pgscratch.WaitSpares)
	out := map[string]*verifier.Driller{}
	for i, d := range ds {
		out[c.Targets[i].Name] = d
	}
	return c, out
}

// leftovers lists what drills may leave behind: downloaded files, embedded
// clusters and their socket folders, and databases and roles named
// backupverify_* on the server.
func leftovers(t *testing.T, stateDir string, pg *testenv.Postgres) []string {
	t.Helper()
	return testenv.Leftovers(t, stateDir, "", pg)
}

// fingerprint is a hash of every row of every table of db, and the list of databases.
func fingerprint(t *testing.T, pg *testenv.Postgres, db string) string {
	t.Helper()
	return pg.Exec(t, db, `SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM (
		SELECT 'c' || c::text AS t FROM contacts c UNION ALL SELECT 'l' || l::text FROM leads l
		UNION ALL SELECT 'o' || o::text FROM opportunities o) x`) + " " +
		pg.Exec(t, "postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
}

func counts(t *testing.T, pg *testenv.Postgres, db string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, tb := range []string{"contacts", "leads", "opportunities"} {
		n, _ := strconv.Atoi(pg.Exec(t, db, "SELECT count(*) FROM "+tb))
		out[tb] = n
	}
	return out
}

func TestDrillBothScratchModes(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 3000)
	pg.CreateSample(t, "production", 500) // must never be touched
	want := counts(t, pg, "crm")
	dir := t.TempDir()
	putBackup(t, filepath.Join(dir, "backups", "2025-12-29T0200Z"), "backup.dump", dumpBytes(t, pg, "crm", "c"))
	before := fingerprint(t, pg, "production")

	state := t.TempDir()
	checks := fmt.Sprintf(`    checks:
      - count: contacts
        equals: %d
      - count: public.leads
        equals: %d
      - count: opportunities
        equals: %d
        max_drop: 5%%
      - orphans: leads.contact_id -> contacts.id
      - foreign_keys: true
      - freshness: leads.created_at
        max_lag: 1h
      - name: no_negative_amounts
        sql: SELECT count(*) FROM opportunities WHERE amount < 0
        max: 0
`, want["contacts"], want["leads"], want["opportunities"])
	yaml := fmt.Sprintf(`state_dir: %s
targets:
  - name: embedded
    source: file://%s/backups/
    drill: {jobs: 2}
%s  - name: server
    source: file://%s/backups/
    drill:
      jobs: 4
      scratch: %s
%s`, state, dir, checks, dir, adminDSN(pg), checks)
	_, ds := drillers(t, yaml)
	for _, name := range []string{"embedded", "server"} {
		t.Run(name, func(t *testing.T) {
			r := ds[name].Run(context.Background(), "test")
			if !r.OK {
				t.Fatalf("drill failed in %s: %s", r.FailedPhase, r.Error)
			}
			if len(r.Phases) != 4 || r.RTOSeconds <= 0 || r.Restore.Tables != 3 || r.Restore.Tool != "pg_restore" {
				t.Errorf("phases %d, rto %v, tables %d, tool %s", len(r.Phases), r.RTOSeconds, r.Restore.Tables, r.Restore.Tool)
			}
			got := map[string]string{}
			for _, c := range r.Checks {
				got[c.Name] = c.Actual
				if !c.OK {
					t.Errorf("check %s failed: expected %s, actual %s, %s", c.Name, c.Expected, c.Actual, c.Error)
				}
			}
			for tb, n := range want {
				name := "count:" + tb
				if tb == "leads" {
					name = "count:public.leads"
				}
				if got[name] != strconv.Itoa(n) {
					t.Errorf("restored %s has %s rows, the source %d", tb, got[name], n)
				}
			}
			if r.Backup.Archive.DumpVersion == "" || r.ServerVersion == "" || r.Backup.SHA256 == "" {
				t.Errorf("report lacks versions or checksum: %+v", r.Backup)
			}
		})
	}
	if l := leftovers(t, state, pg); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
	if after := fingerprint(t, pg, "production"); after != before {
		t.Errorf("another database on the scratch server changed:\nbefore %s\nafter  %s", before, after)
	}
}

func TestDrillSafetyAndFailures(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 200)
	plain := string(dumpBytes(t, pg, "crm", "p"))
	custom := dumpBytes(t, pg, "crm", "c")
	dir, state := t.TempDir(), t.TempDir()
	pwned := filepath.Join(t.TempDir(), "pwned")
	copyProgram := filepath.Join(t.TempDir(), "copy-program")

	inject := func(sql string) []byte {
		// After the schema, before the end marker, as an attacker would.
		i := strings.Index(plain, "-- PostgreSQL database dump complete")
		return []byte(plain[:i] + sql + "\n" + plain[i:])
	}
	// The header holds the server's version, then pg_dump's: make pg_dump's say 99.
	newer := bytes.Clone(custom)
	i := bytes.LastIndex(newer[:300], []byte("\x0015.")) + 1
	if i <= 0 {
		t.Fatalf("no pg_dump version in the header: %q", newer[:200])
	}
	copy(newer[i:], "99")
	cases := []struct {
		name, file string
		body       []byte
		timeout    string
		phase      verifier.Phase
		want       string
	}{
		{"copy to program", "db.sql", inject(fmt.Sprintf("COPY (SELECT 1) TO PROGRAM 'touch %s';", copyProgram)), "1m",
			verifier.PhaseRestore, "must be superuser or have privileges of the pg_execute_server_program role"},
		{"psql shell escape", "db.sql", inject(fmt.Sprintf("\\! touch %s", pwned)), "1m",
			verifier.PhaseRestore, "meta-command"},
		{"newer pg_dump than the scratch server", "db.dump", newer, "1m",
			verifier.PhaseRestore, "made by pg_dump 99."},
		{"restore past the drill timeout", "db.sql", inject("SELECT pg_sleep(120);"), "4s",
			verifier.PhaseRestore, "drill timed out after 4s (in phase restore)"},
		{"corrupt backup", "db.dump", custom[:len(custom)/2], "1m",
			verifier.PhaseVerify, "unreadable_archive"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(dir, strconv.Itoa(i))
			putBackup(t, src, tc.file, tc.body)
			_, ds := drillers(t, fmt.Sprintf("state_dir: %s\ntargets:\n  - name: t\n    source: file://%s/\n    drill: {timeout: %s}\n",
				state, src, tc.timeout))
			start := time.Now()
			r := ds["t"].Run(context.Background(), "test")
			if r.OK || r.FailedPhase != tc.phase || !strings.Contains(r.Error, tc.want) {
				t.Fatalf("ok %v, phase %q, error %q; want phase %q and %q", r.OK, r.FailedPhase, r.Error, tc.phase, tc.want)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("took %s", d)
			}
			if l := leftovers(t, state, nil); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
	for _, f := range []string{pwned, copyProgram} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("the dump ran a program on the host: %s exists", f)
		}
	}
}

// slowPlainDump is a valid plain dump whose restore sleeps, so that a drill
// can be caught mid-restore.
func slowPlainDump(t *testing.T, pg *testenv.Postgres, db string, sleep time.Duration) []byte {
	plain := string(dumpBytes(t, pg, db, "p"))
	i := strings.Index(plain, "-- PostgreSQL database dump complete")
	return []byte(plain[:i] + fmt.Sprintf("SELECT pg_sleep(%g);\n", sleep.Seconds()) + plain[i:])
}

func TestDrillCancelledMidRestore(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 200)
	dir, state := t.TempDir(), t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.sql", slowPlainDump(t, pg, "crm", time.Minute))
	_, ds := drillers(t, fmt.Sprintf(`state_dir: %s
targets:
  - name: emb
    source: file://%s/b/
  - name: srv
    source: file://%s/b/
    drill: {scratch: "%s"}
`, state, dir, dir, adminDSN(pg)))
	for _, name := range []string{"emb", "srv"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan verifier.DrillResult)
			reports := &report.Store{Dir: filepath.Join(state, "reports"), Log: testLog(t), Now: time.Now}
			go func() {
				r, _, _ := DrillAndReport(ctx, ds[name], reports, verifier.TriggerSchedule, testLog(t))
				done <- r
			}()
			waitUntil(t, "the restore to start", 30*time.Second, func() bool {
				return pg.Exec(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()") != "0" ||
					len(leftovers(t, state, nil)) == 2 && hasSleepingCluster(t, state)
			})
			cancel()
			r := <-done
			if r.OK || r.FailedPhase != verifier.PhaseRestore {
				t.Errorf("ok %v, phase %s", r.OK, r.FailedPhase)
			}
			// Cancellation is no verdict: no drill recorded, no report.
			if st := ds[name].Status(); !r.Aborted || st.Last != nil || st.Aborted != 1 || st.Failures[verifier.PhaseRestore] != 0 {
				t.Errorf("aborted %v; recorded last drill %v, aborted %d, restore failures %d; want true, none, 1, 0",
					r.Aborted, st.Last != nil, st.Aborted, st.Failures[verifier.PhaseRestore])
			}
			if ents, _ := os.ReadDir(filepath.Join(state, "reports", name)); len(ents) > 0 {
				t.Errorf("a cancelled drill wrote a report: %d files", len(ents))
			}
			if l := leftovers(t, state, pg); len(l) > 0 {
				t.Errorf("a cancelled drill left behind: %v", l)
			}
		})
	}
}

// hasSleepingCluster says whether an embedded scratch cluster is restoring.
func hasSleepingCluster(t *testing.T, state string) bool {
	for _, dir := range leftovers(t, state, nil) {
		if !filepath.IsAbs(dir) || strings.HasPrefix(filepath.Base(dir), "bvsock-") {
			continue
		}
		sock := filepath.Join(dir, "socket")
		if b, err := os.ReadFile(filepath.Join(dir, "socket.path")); err == nil {
			sock = string(b)
		}
		if _, err := os.Stat(filepath.Join(sock, ".s.PGSQL.5432")); err == nil {
			return true
		}
	}
	return false
}

func TestDrillsNeverOverlapWithMaxConcurrentOne(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	dir := t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.sql", slowPlainDump(t, pg, "crm", 1500*time.Millisecond))
	d, base := startDaemon(t, fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
drills: {max_concurrent: 1}
targets:
  - {name: a, source: "file://%s/b/", checksum: manifest}
  - {name: b, source: "file://%s/b/", checksum: manifest}
  - {name: c, source: "file://%s/b/", checksum: manifest}
`, dir, dir, dir, dir))
	for _, n := range []string{"a", "b", "c"} {
		if err := d.sched.RunNow(n, "test"); err != nil {
			t.Fatal(err)
		}
	}
	var results []*verifier.DrillResult
	waitUntil(t, "three drills", 2*time.Minute, func() bool {
		results = results[:0]
		for _, s := range d.Statuses() {
			if s.Drill.Last != nil {
				results = append(results, s.Drill.Last)
			}
		}
		return len(results) == 3
	})
	sort.Slice(results, func(i, j int) bool { return results[i].Started.Before(results[j].Started) })
	for i, r := range results {
		if !r.OK {
			t.Errorf("%s failed: %s", r.Target, r.Error)
		}
		if i > 0 && r.Started.Before(results[i-1].Ended) {
			t.Errorf("drills of %s and %s overlapped: %s < %s", results[i-1].Target, r.Target, r.Started, results[i-1].Ended)
		}
	}
	var m map[string]float64
	waitUntil(t, "no drill in progress", 10*time.Second, func() bool {
		m = scrapeURL(t, base+"/metrics")
		return m[`backupverify_drill_in_progress{target="a"}`]+m[`backupverify_drill_in_progress{target="b"}`]+m[`backupverify_drill_in_progress{target="c"}`] == 0
	})
	for _, n := range []string{"a", "b", "c"} {
		if m[`backupverify_drill_success{target="`+n+`"}`] != 1 || m[`backupverify_drills_total{target="`+n+`"}`] != 1 ||
			m[`backupverify_rto_seconds{target="`+n+`"}`] <= 0 || m[`backupverify_drill_in_progress{target="`+n+`"}`] != 0 {
			t.Errorf("drill metrics of %s wrong: success %v total %v rto %v in progress %v", n, m[`backupverify_drill_success{target="`+n+`"}`],
				m[`backupverify_drills_total{target="`+n+`"}`], m[`backupverify_rto_seconds{target="`+n+`"}`], m[`backupverify_drill_in_progress{target="`+n+`"}`])
		}
	}
}

// TestDrillSkipsABackupStillBeingWritten: the newest dump has no CHECKSUM yet
// and is within backup_grace, so the drill restores the previous one.
func TestDrillSkipsABackupStillBeingWritten(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	dir, state := t.TempDir(), t.TempDir()
	body := dumpBytes(t, pg, "crm", "c")
	putBackup(t, filepath.Join(dir, "b", "2025-12-29T0100Z"), "backup.dump", body)
	os.MkdirAll(filepath.Join(dir, "b", "2025-12-29T0200Z"), 0o755)
	os.WriteFile(filepath.Join(dir, "b", "2025-12-29T0200Z", "backup.dump"), body[:len(body)/2], 0o644)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, "b", "2025-12-29T0100Z", "backup.dump"), old, old)
	_, ds := drillers(t, fmt.Sprintf("state_dir: %s\ntargets:\n  - name: t\n    source: file://%s/b/\n    backup_grace: 10m\n", state, dir))
	r := ds["t"].Run(context.Background(), "test")
	if !r.OK || r.Backup.Key != "2025-12-29T0100Z/backup.dump" {
		t.Fatalf("ok %v, key %s, error %s", r.OK, r.Backup.Key, r.Error)
	}

	// The newest one's manifest was written first and its dump is still
	// growing: a mismatch the watch loop waits for (checksum file older
	// than the dump, within grace). The drill restores the one before it
	// instead of failing in verify and paging.
	growing := filepath.Join(dir, "b", "2025-12-29T0300Z")
	putBackup(t, growing, "backup.dump", body)
	os.WriteFile(filepath.Join(growing, "backup.dump"), body[:len(body)/3], 0o644)
	before := time.Now().Add(-time.Minute)
	os.Chtimes(filepath.Join(growing, "CHECKSUM"), before, before)
	r = ds["t"].Run(context.Background(), "test")
	if !r.OK || r.Backup.Key != "2025-12-29T0100Z/backup.dump" {
		t.Fatalf("with a dump still growing under its manifest: ok %v, key %s, phase %s, error %s", r.OK, r.Backup.Key, r.FailedPhase, r.Error)
	}
}

// TestPasswordsNeverLeak: the admin DSN's password appears in no log line,
// report, status page or drill result.
func TestPasswordsNeverLeak(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 50)
	dir := t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	const secret = "hunter2-s3cr3t"
	dsn := fmt.Sprintf("postgres://%s:%s@/postgres?host=%s&port=5432&sslmode=disable", pg.Superuser, secret, pg.SocketDir())
	var logs bytes.Buffer
	cfgPath := filepath.Join(dir, "c.yml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nstate_dir: %s/state\ntargets:\n  - name: crm\n    source: file://%s/b/\n    drill: {scratch: \"${TEST_SCRATCH_DSN}\"}\n", dir, dir)), 0o644)
	t.Setenv("TEST_SCRATCH_DSN", dsn)
	addrc := make(chan string, 1)
	d, err := New(Options{ConfigPath: cfgPath, Log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Listening: func(a string) { addrc <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, web.New(d, testLog(t), time.Now).Register) }()
	base := "http://" + <-addrc
	d.RunDrill("crm", "test")
	waitUntil(t, "the drill and its report", 60*time.Second, func() bool {
		_, _, page := get(t, base+"/")
		return strings.Contains(page, ">latest<")
	})
	_, _, page := get(t, base+"/")
	_, _, api := get(t, base+"/api/v1/status")
	cancel()
	<-done
	reports, _ := filepath.Glob(filepath.Join(dir, "state", "reports", "crm", "*"))
	everything := logs.String() + page + api
	for _, r := range append(reports, filepath.Join(dir, "state", "targets", "crm", "drill.json")) {
		b, _ := os.ReadFile(r)
		everything += string(b)
	}
	if !strings.Contains(everything, "drill passed") {
		t.Fatalf("the drill did not pass:\n%s", logs.String())
	}
	if strings.Contains(everything, secret) {
		t.Error("the scratch DSN's password leaked into logs, reports, state or pages")
	}
}

// TestDrillCancelledWhileScratchStarts cancels embedded drills at moments
// spread over initdb and server start-up: none may leave a cluster behind.
func TestDrillCancelledWhileScratchStarts(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 50)
	dir, state := t.TempDir(), t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.sql", slowPlainDump(t, pg, "crm", time.Minute))
	scratch := testenv.ScratchDir(t)
	_, ds := drillers(t, fmt.Sprintf("state_dir: %s\ndrills: {scratch_dir: %s}\ntargets:\n  - name: emb\n    source: file://%s/b/\n", state, scratch, dir))
	for i, delay := range []time.Duration{0, 150 * time.Millisecond, 300 * time.Millisecond, 450 * time.Millisecond, 600 * time.Millisecond, 800 * time.Millisecond} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan verifier.DrillResult)
		go func() { done <- ds["emb"].Run(ctx, "test") }()
		waitUntil(t, "the scratch folder", 30*time.Second, func() bool {
			ents, _ := os.ReadDir(scratch)
			return len(ents) > 0
		})
		time.Sleep(delay)
		cancel()
		r := <-done
		if r.OK {
			t.Fatalf("%d: a cancelled drill passed", i)
		}
		if l := testenv.Leftovers(t, state, scratch, nil); len(l) > 0 {
			t.Fatalf("%d (cancelled %s after the scratch folder appeared): left behind %v", i, delay, l)
		}
		if out, _ := exec.Command("pgrep", "-f", scratch).Output(); len(out) > 0 {
			t.Fatalf("%d: a scratch server is still running: %s", i, out)
		}
	}
}

// TestCatchUpDrillAtStart: a daemon that was down (or shut down mid-drill)
// when a drill was due drills at start, as anacron would; one whose last
// drill is recent does not.
func TestCatchUpDrillAtStart(t *testing.T) {
	now := time.Date(2025, 12, 29, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	last := func(ago time.Duration) *verifier.DrillResult { return &verifier.DrillResult{Started: now.Add(-ago)} }
	for _, tt := range []struct {
		name  string
		last  *verifier.DrillResult
		since time.Time
		want  bool
	}{
		{"last drill a day and a minute ago", last(day + time.Minute), now.Add(-30 * day), true},
		{"last drill an hour ago", last(time.Hour), now.Add(-30 * day), false},
		{"never drilled, watched for two days", nil, now.Add(-2 * day), true},
		{"never drilled, just added", nil, now.Add(-time.Minute), false},
	} {
		if got := catchUpDue(tt.last, tt.since, day, now); got != tt.want {
			t.Errorf("%s: catch-up %v, want %v", tt.name, got, tt.want)
		}
	}

	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 20)
	dir := t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	state := filepath.Join(dir, "state")
	old, _ := json.Marshal(map[string]any{"last": verifier.DrillResult{Target: "crm", OK: true,
		Started: time.Now().Add(-49 * time.Hour), Ended: time.Now().Add(-49 * time.Hour)}})
	os.MkdirAll(filepath.Join(state, "targets", "crm"), 0o750)
	os.WriteFile(filepath.Join(state, "targets", "crm", "drill.json"), old, 0o600)
	d, _ := startDaemon(t, fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s
targets:
  - name: crm
    source: file://%s/b/
    drill: {schedule: "@daily"}
`, state, dir))
	waitUntil(t, "a catch-up drill", 60*time.Second, func() bool {
		l := d.Statuses()[0].Drill.Last
		return l != nil && l.Trigger == verifier.TriggerCatchUp && l.OK
	})
}
