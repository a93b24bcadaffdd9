package daemon

import (
	"os"
	"reflect"
	"testing"

	"github.com/backupverify/backupverify/config"
)

// TestDomainTargetConvertsEveryField: a target with every key set converts
// into a verifier.Target with no field left zero, so a key added to the
// configuration cannot be dropped on its way into the domain unnoticed.
func TestDomainTargetConvertsEveryField(t *testing.T) {
	c, err := config.Parse([]byte(`state_dir: /tmp/x
timezone: Europe/Berlin
targets:
  - name: crm
    source: file:///tmp/b/
    match: "**/*.dump"
    checksum: sidecar
    manifest: SUMS
    archive_timezone: America/New_York
    backup_schedule: "0 2 * * *"
    backup_grace: 5m
    poll: 2m
    verify_last: 3
    rpo: 2h
    rto: 30m
    drill: {timeout: 20m, jobs: 2, allow_errors: ["role .* does not exist"]}
    checks:
      - {name: a, count: leads, min: 1, max: 9, equals: 5, max_drop: 10%, timeout: 1m}
      - {name: b, freshness: leads.created, max_lag: 1h}
      - {name: c, orphans: leads.contact_id -> contacts.id}
      - {name: d, foreign_keys: true}
      - {name: e, sql: "SELECT 1", equals: 1}
`), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	vt, err := domainTarget(c, c.Targets[0])
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(vt)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("verifier.Target.%s is zero after conversion", v.Type().Field(i).Name)
		}
	}
	// Each field of CheckSpec is set by one of the checks.
	set := map[string]bool{}
	for _, ck := range vt.Checks {
		cv := reflect.ValueOf(ck)
		for i := range cv.NumField() {
			if !cv.Field(i).IsZero() {
				set[cv.Type().Field(i).Name] = true
			}
		}
	}
	ct := reflect.TypeFor[config.Check]()
	for i := range ct.NumField() {
		if name := ct.Field(i).Name; !set[name] {
			t.Errorf("config.Check.%s reaches no verifier.CheckSpec field of the same name", name)
		}
	}
	if got, want := vt.Checks[1].MaxLag.String(), "1h0m0s"; got != want {
		t.Errorf("max_lag %s, want %s", got, want)
	}
	if got, want := vt.BackupSchedule, "CRON_TZ=Europe/Berlin 0 2 * * *"; got != want {
		t.Errorf("backup_schedule %q, want %q (read in the top-level timezone)", got, want)
	}
	if got := vt.ArchiveTZ.String(); got != "America/New_York" {
		t.Errorf("archive_timezone %s, want America/New_York", got)
	}
}
