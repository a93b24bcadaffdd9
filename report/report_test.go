package report

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2025, 12, 29, 3, 30, 0, 0, time.UTC)

func f(v float64) *float64 { return &v }

func passing() verifier.DrillResult {
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	return verifier.DrillResult{
		Target: "crm", Started: t0, Ended: at(903.4), OK: true, RTOSeconds: 903.4, RTOTarget: 3600, RPOTarget: 900,
		Trigger: "schedule", Scratch: "embedded", Database: "backupverify_crm_1766979000", ServerVersion: "15.18", Jobs: 4,
		Backup: verifier.DrillBackup{
			Source: "s3://intelliflow-backups/postgres/", Key: "2025-12-29T0318Z/backup.dump", ETag: "9b2cf535f27731c974343645a3985328",
			Size: 2469606531, LastModified: t0.Add(-11 * time.Minute), Created: t0.Add(-12*time.Minute - 3*time.Second),
			SHA256: "38a533921b9e1b6abcd4b2faa0a17de49bccf6e79edd3ab9e2cbf6ff56ff6712", Expected: "38a533921b9e1b6abcd4b2faa0a17de49bccf6e79edd3ab9e2cbf6ff56ff6712",
			ChecksumFrom: "manifest 2025-12-29T0318Z/CHECKSUM",
			Archive: verifier.ArchiveInfo{Format: "custom", Created: t0.Add(-12*time.Minute - 3*time.Second), Database: "crm",
				DumpVersion: "15.18 (Debian 15.18-0+deb12u1)", ServerVersion: "15.18 (Debian 15.18-0+deb12u1)", ArchiveVer: "1.14-0"},
		},
		Phases: []verifier.PhaseResult{
			{Phase: verifier.PhaseDownload, Started: t0, Seconds: 180.2, OK: true},
			{Phase: verifier.PhaseVerify, Started: at(180.2), Seconds: 61.5, OK: true},
			{Phase: verifier.PhaseRestore, Started: at(241.7), Seconds: 659.3, OK: true},
			{Phase: verifier.PhaseChecks, Started: at(901), Seconds: 2.4, OK: true},
		},
		Restore: verifier.RestoreReport{Tool: "pg_restore", Tables: 3, IgnoredErrors: []string{"EXTENSION pg_stat_statements: ERROR:  permission denied to create extension \"pg_stat_statements\""}},
		Checks: []verifier.CheckResult{
			{Name: "count:leads", Kind: "count", Expected: "≥ 15000", Actual: "15234", Value: f(15234), OK: true},
			{Name: "count:contacts", Kind: "count", Expected: "drop ≤ 5% from 8560 (≥ 8132)", Actual: "8567", Value: f(8567), OK: true},
			{Name: "orphans:leads.contact_id->contacts.id", Kind: "orphans", Expected: "0", Actual: "0", Value: f(0), OK: true},
			{Name: "freshness:leads.created_at", Kind: "freshness", Expected: "lag ≤ 15m", Actual: "lag 41s (newest 2025-12-29T03:17:22Z)", Value: f(41), OK: true},
		},
	}
}

func failing() verifier.DrillResult {
	r := passing()
	r.OK, r.RTOSeconds, r.Trigger = false, 0, "api"
	r.Ended = t0.Add(903400 * time.Millisecond)
	r.FailedPhase = verifier.PhaseChecks
	r.Error = "2 of 4 checks failed: count:leads, orphans:leads.contact_id->contacts.id"
	r.Phases[3].OK, r.Phases[3].Error = false, r.Error
	r.Checks[0] = verifier.CheckResult{Name: "count:leads", Kind: "count", Expected: "≥ 15000", Actual: "0", Value: f(0)}
	r.Checks[2] = verifier.CheckResult{Name: "orphans:leads.contact_id->contacts.id", Kind: "orphans", Expected: "0", Actual: "12", Value: f(12)}
	r.Backup.Key = "2025-12-29T0318Z/backup|weird<name>.dump"
	return r
}

// rpoMissed is a drill that restored and checked a backup older than the
// RPO objective: the outcome line must say FAIL, as its RPO row does.
func rpoMissed() verifier.DrillResult {
	r := passing()
	r.Trigger = verifier.TriggerCLI
	r.Backup.Created = t0.Add(-2 * time.Hour)
	r.Backup.Archive.Created = r.Backup.Created
	return r
}

// TestOutcomeAgreesWithItsTable: the outcome line is PASS only when every
// row of the outcome table is.
func TestOutcomeAgreesWithItsTable(t *testing.T) {
	for name, r := range map[string]verifier.DrillResult{"passing": passing(), "failing": failing(), "rpo-missed": rpoMissed()} {
		md := string(Markdown(Report{Name: "x", Outcome: outcome(r), Drill: r}))
		_, table, _ := strings.Cut(md, "## 1. Outcome: ")
		table, _, _ = strings.Cut(table, "## 2.")
		rowFail := strings.Contains(table, "| FAIL |")
		if lineFail := strings.HasPrefix(table, "FAIL"); lineFail != rowFail {
			t.Errorf("%s: outcome line FAIL = %v, a FAIL row = %v:\n%s", name, lineFail, rowFail, table)
		}
	}
	if md := string(Markdown(Report{Outcome: outcome(rpoMissed()), Drill: rpoMissed()})); !strings.Contains(md, "| Performed by | backupverify (cli) |") {
		t.Errorf("a drill run from the command line is not named so:\n%s", md)
	}
}

// TestReportErrorsAreCounted: a report that cannot be written, or copied to
// reports.upload, is counted by op.
func TestReportErrorsAreCounted(t *testing.T) {
	counts := map[string]int{}
	dir := t.TempDir()
	s := &Store{Dir: dir, Log: quiet(), Now: func() time.Time { return t0 }, Upload: failingUploader{},
		OnError: func(op string) { counts[op]++ }}
	if _, _, err := s.Write(context.Background(), passing()); err != nil {
		t.Fatal(err)
	}
	if counts["upload"] != 2 {
		t.Errorf("upload errors counted %d, want 2 (the .md and the .json)", counts["upload"])
	}
	os.WriteFile(filepath.Join(dir, "blocked"), nil, 0o600)
	s.Dir = filepath.Join(dir, "blocked") // a file where the folder should be
	if _, _, err := s.Write(context.Background(), passing()); err == nil {
		t.Fatal("write into a file succeeded")
	}
	if counts["write"] != 1 {
		t.Errorf("write errors counted %d, want 1", counts["write"])
	}
}

type failingUploader struct{}

func (failingUploader) Upload(context.Context, string, []byte) error {
	return errors.New("503 Slow Down")
}
func (failingUploader) String() string { return "s3://reports/" }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestGoldenReports(t *testing.T) {
	for name, r := range map[string]verifier.DrillResult{"passing": passing(), "failing": failing(), "rpo-missed": rpoMissed()} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := &Store{Dir: dir, Log: quiet(), Now: func() time.Time { return t0 }}
			// A first report, so that the golden one shows the chain.
			first := r
			first.Started, first.Ended = t0.Add(-24*time.Hour), r.Ended.Add(-24*time.Hour)
			if _, _, err := s.Write(context.Background(), first); err != nil {
				t.Fatal(err)
			}
			p, _, err := s.Write(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			for _, file := range []string{p.Markdown, p.JSON} {
				got, _ := os.ReadFile(file)
				golden := filepath.Join("testdata", name+filepath.Ext(file)+".golden")
				if *update {
					os.WriteFile(golden, got, 0o644)
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./report -update)", err)
				}
				if string(got) != string(want) {
					t.Errorf("%s differs from %s; run go test ./report -update and review the diff\n%s", file, golden, got)
				}
			}
			if n, probs, err := s.Verify("crm"); err != nil || n != 2 || len(probs) != 0 {
				t.Errorf("verify: %d reports, %v, %v", n, probs, err)
			}
		})
	}
}

func TestVerifyNamesAlteredAndRemovedReports(t *testing.T) {
	dir := t.TempDir()
	clock := t0
	s := &Store{Dir: dir, Log: quiet(), Now: func() time.Time { return clock }}
	var names []string
	for i := range 6 {
		r := passing()
		r.Started, r.Ended = t0.Add(time.Duration(i)*24*time.Hour), t0.Add(time.Duration(i)*24*time.Hour+15*time.Minute)
		p, _, err := s.Write(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, p.Name)
	}
	if _, probs, _ := s.Verify("crm"); len(probs) != 0 {
		t.Fatalf("an intact chain has problems: %v", probs)
	}
	// Edit one report (both twins, as a careful forger would) and delete another.
	crm := filepath.Join(dir, "crm")
	edited := filepath.Join(crm, names[1]+".json")
	b, _ := os.ReadFile(edited)
	os.WriteFile(edited, []byte(strings.Replace(string(b), `"ok": true`, `"ok": false`, 1)), 0o644)
	os.Remove(filepath.Join(crm, names[3]+".json"))
	os.Remove(filepath.Join(crm, names[3]+".md"))
	// And alter the newest one's Markdown only.
	md := filepath.Join(crm, names[5]+".md")
	mb, _ := os.ReadFile(md)
	os.WriteFile(md, []byte(strings.Replace(string(mb), "PASS", "pass", 1)), 0o644)

	_, probs, err := s.Verify("crm")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range probs {
		got = append(got, p.Report+" "+p.Kind)
	}
	want := []string{names[1] + " altered", names[3] + " missing", names[5] + " altered"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems\n got %v\nwant %v\n%v", got, want, probs)
	}
}

func TestPruneKeepsTheChainCheckable(t *testing.T) {
	dir := t.TempDir()
	clock := t0
	s := &Store{Dir: dir, Log: quiet(), Now: func() time.Time { return clock }, Retention: 3 * 24 * time.Hour}
	for i := range 6 {
		clock = t0.Add(time.Duration(i) * 24 * time.Hour)
		r := passing()
		r.Started, r.Ended = clock, clock.Add(15*time.Minute)
		if _, _, err := s.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	n, probs, err := s.Verify("crm")
	if err != nil || len(probs) != 0 {
		t.Fatalf("after pruning: %v %v", probs, err)
	}
	if n != 4 { // days 2..5 are within 3 days of day 5
		t.Errorf("%d reports kept, want 4", n)
	}
	// Removing the oldest kept report is not pruning: it is named.
	names, _ := s.list("crm")
	os.Remove(filepath.Join(dir, "crm", names[0]+".json"))
	os.Remove(filepath.Join(dir, "crm", names[0]+".md"))
	if _, probs, _ := s.Verify("crm"); len(probs) != 1 || probs[0].Report != names[0] || probs[0].Kind != "missing" {
		t.Errorf("removing the oldest kept report: %v", probs)
	}
}
