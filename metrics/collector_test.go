package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/backupverify/backupverify/verifier"
)

var update = flag.Bool("update", false, "rewrite the golden exposition")

type snaps []verifier.Status

func (s snaps) Statuses() []verifier.Status { return s }

var t0 = time.Date(2025, 12, 29, 4, 0, 0, 0, time.UTC)

func fp(v float64) *float64 { return &v }

// fixture: "fresh" was just added (nothing known yet); "crm" has backups,
// a verdict, a failing download of its newest backup, a drill that failed in
// restore after one that failed a check, and one aborted drill.
func fixture() snaps {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	checked := &verifier.DrillResult{Target: "crm", Started: at(-120), Ended: at(-110), FailedPhase: verifier.PhaseChecks,
		Phases: []verifier.PhaseResult{{Phase: verifier.PhaseDownload, Seconds: 10, OK: true}, {Phase: verifier.PhaseVerify, Seconds: 5, OK: true},
			{Phase: verifier.PhaseRestore, Seconds: 100, OK: true}, {Phase: verifier.PhaseChecks, Seconds: 2}},
		Checks: []verifier.CheckResult{
			{Name: "count:leads", Kind: "count", Value: fp(15234), OK: true},
			{Name: "freshness:leads.created_at", Kind: verifier.CheckFreshness, Value: fp(7200)},
		}}
	passed := &verifier.DrillResult{Target: "crm", Started: at(-1500), Ended: at(-1490), OK: true, RTOSeconds: 600,
		Backup: verifier.DrillBackup{Created: at(-1560)}}
	last := &verifier.DrillResult{Target: "crm", Started: at(-60), Ended: at(-58), FailedPhase: verifier.PhaseRestore,
		Phases: []verifier.PhaseResult{{Phase: verifier.PhaseDownload, Seconds: 60, OK: true}, {Phase: verifier.PhaseVerify, Seconds: 20, OK: true},
			{Phase: verifier.PhaseRestore, Seconds: 40}}}
	return snaps{
		{Target: "crm", RPOTarget: time.Hour, RTOTarget: 2 * time.Hour, Since: at(-10000),
			Newest:          &verifier.Record{Key: "b.dump", Size: 2048, Created: at(-5)},
			LastResult:      &verifier.Result{Key: "a.dump", OK: true, Created: at(-65), Archive: verifier.ArchiveInfo{Format: "custom", Database: "crm", DumpVersion: "15.18"}},
			LastVerified:    &verifier.Result{Key: "a.dump", OK: true, Created: at(-65)},
			DownloadFailing: true, VerifiedTotal: 3, Failures: map[verifier.Reason]uint64{verifier.ReasonDownloadError: 2},
			ScanLastOK: at(-1), Present: 2, Oldest: at(-125), DrillInterval: 24 * time.Hour, NextDrill: at(600),
			Drill: verifier.DrillStatus{Last: last, LastOK: passed, LastChecked: checked, Total: 3, Aborted: 1,
				Failures: map[verifier.Phase]uint64{verifier.PhaseRestore: 1, verifier.PhaseChecks: 1}}},
		{Target: "fresh", RPOTarget: time.Hour, RTOTarget: time.Hour, Since: at(-3), DrillInterval: 24 * time.Hour},
	}
}

// TestGoldenExposition: the scrape of a known state, linted and compared
// with testdata/exposition.golden.
func TestGoldenExposition(t *testing.T) {
	reg := NewRegistry(fixture(), func() time.Time { return t0 }, BuildInfo{Version: "v1", Revision: "abc"})
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "backupverify_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	var compared []string
	for _, n := range Names() {
		if n != ns+"_build_info" { // its labels carry the Go version
			compared = append(compared, n)
		}
	}
	golden := filepath.Join("testdata", "exposition.golden")
	if *update {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), ns+"_") && mf.GetName() != ns+"_build_info" {
				if err := enc.Encode(mf); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./metrics -update)", err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f, compared...); err != nil {
		t.Error(err)
	}
}

// TestNamesListsEverySeries: Names() holds exactly the backupverify_*
// families a full scrape has.
func TestNamesListsEverySeries(t *testing.T) {
	reg := NewRegistry(fixture(), func() time.Time { return t0 }, BuildInfo{Version: "v1", Revision: "abc"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), ns+"_") {
			got = append(got, mf.GetName())
		}
	}
	want := Names()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("scraped families differ from Names()\n got %v\nwant %v", got, want)
	}
}
