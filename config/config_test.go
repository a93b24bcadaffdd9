package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadGood(t *testing.T) {
	b, err := os.ReadFile("testdata/good.yml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b, env(map[string]string{"BV_TEST_TOKEN": "tok-0123456789abcdef", "BV_TEST_PASSWORD": "pw"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.TriggerToken != "tok-0123456789abcdef" {
		t.Errorf("trigger_token = %q, want the expanded ${BV_TEST_TOKEN}", c.HTTP.TriggerToken)
	}
	crm, billing := c.Targets[0], c.Targets[1]
	if crm.RPO.D() != 15*time.Minute || c.Reports.Retention.D() != 400*24*time.Hour {
		t.Errorf("rpo %v, retention %v", crm.RPO, c.Reports.Retention)
	}
	var names []string
	for _, ch := range crm.Checks {
		names = append(names, ch.Name)
	}
	want := "count:leads count:contacts orphans:leads.contact_id->contacts.id foreign_keys freshness:leads.created_at no_negative_amounts"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("check names\n got %s\nwant %s", got, want)
	}
	// billing takes every default.
	if billing.Poll.D() != time.Minute || billing.BackupGrace.D() != 10*time.Minute || billing.Checksum != "auto" ||
		billing.Manifest != "CHECKSUM" || billing.Match != DefaultMatch || billing.Drill.Jobs != runtime.NumCPU() || billing.VerifyLast != 1 {
		t.Errorf("defaults not applied: %+v", billing)
	}
	if !strings.Contains(billing.Drill.Scratch, ":pw@") {
		t.Errorf("scratch DSN not expanded")
	}
}

func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"invalid-unknown-key.yml", []string{
			`line 6: targets[0].rpo_target: unknown key`,
			`line 8: targets[0].drill.schedul: unknown key (did you mean "schedule"?)`,
		}},
		{"invalid-values.yml", []string{
			`line 1: listen: must be host:port, e.g. ":9847" or "127.0.0.1:9847"`,
			`line 4: targets[0].name: "CRM" must match [a-z0-9_-]+`,
			`line 5: targets[0].source: "http://example.com/": must start with s3:// or file://`,
			`line 6: targets[0].checksum: "md5" is not one of auto, manifest, sidecar, s3, none`,
			`line 7: targets[0].poll: invalid duration "5x" (use e.g. 90s, 15m, 1h30m, 30d)`,
			`line 8: targets[0].rpo: invalid duration "-1m" (use e.g. 90s, 15m, 1h30m, 30d)`,
			`line 9: targets[0].backup_schedule: invalid cron spec "every day": expected exactly 5 fields, found 2: [every day]`,
			`line 11: targets[0].drill.jobs: expected a whole number, got "four"`,
			`line 12: targets[0].drill.scratch: must be "embedded" or an admin DSN postgres://user@host:port/dbname`,
			`line 14: targets[1].source: "file://relative/path": a file source needs an absolute path, e.g. file:///var/backups/crm/`,
			`line 15: targets[1].checksum: "s3" needs an s3:// source`,
			`line 16: targets[1].archive_timezone: "UTC+2" is not an IANA time zone name such as UTC or Europe/Berlin`,
			`line 17: timezone: "Local" is not an IANA time zone name such as UTC or Europe/Berlin`,
		}},
		{"invalid-duplicate-names.yml", []string{
			`line 4: targets[1].name: "crm" is already the name of targets[0]`,
		}},
		{"invalid-checks.yml", []string{
			`line 5: targets[0].checks[0].orphans: "leads.contact_id" must read child_table.column -> parent_table.column`,
			`line 6: targets[0].checks[1].unknown_kind: unknown key`,
			`line 6: targets[0].checks[1]: needs one of count, orphans, foreign_keys, freshness or sql`,
			`line 7: targets[0].checks[2]: count needs min, max, equals or max_drop`,
			`line 8: targets[0].checks[3]: has count and orphans: a check has exactly one kind`,
			`line 14: targets[0].checks[5]: check name "same" is already used by checks[4]`,
			`line 17: targets[0].checks[6].freshness: "leads" must read table.column`,
			`line 17: targets[0].checks[6].max_lag: freshness needs a positive max_lag`,
			`line 18: targets[0].checks[7].name: a sql check needs a name`,
		}},
		{"invalid-never-right.yml", []string{
			`line 1: state_dir: "var/lib/backupverify" must be an absolute path: a relative one would move with the working directory`,
			`line 3: http.trigger_token: ${BV_TEST_SURELY_UNSET_TOKEN} is not set in the environment (write ${BV_TEST_SURELY_UNSET_TOKEN:-default} to give a default)`,
			`line 7: targets[0].backup_schedule: cron spec "0 0 30 2 *" never runs: no date matches it`,
			`line 8: targets[0].verify.max_plain_size: invalid size "12 parsecs" (use e.g. 512MiB, 64GiB, 1TiB)`,
			`line 10: targets[0].drill.schedule: cron spec "0 0 31 4 *" never runs: no date matches it`,
			`line 11: targets[0].drill.scratch: sslmode "verify_full" is not one of disable, allow, prefer, require, verify-ca, verify-full`,
			`line 14: targets[1].verify.reader: unknown reader "pg_dump" (use auto or pg_restore)`,
			`line 16: targets[1].drill.scratch: ${BV_TEST_SURELY_UNSET_PW} is not set in the environment (write ${BV_TEST_SURELY_UNSET_PW:-default} to give a default)`,
		}},
		{"invalid-short-token.yml", []string{
			`line 3: http.trigger_token: is 6 bytes; a token must be at least 16 bytes (e.g. openssl rand -hex 16)`,
		}},
		{"invalid-reports.yml", []string{
			`line 3: reports.signing_key_file: "/var/lib/backupverify/keys/report.key" lies inside state_dir: whoever can write the reports could read the key`,
			`line 4: reports.object_lock.mode: "legal-hold" is not governance or compliance`,
		}},
		{"invalid-syntax.yml", []string{`line 2: did not find expected ',' or ']'`}},
		{"invalid-empty.yml", []string{`the file is empty`}},
		{"invalid-no-targets.yml", []string{`line 2: targets: at least one target is required`}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", tt.file))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *config.Error", err)
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.String())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems\n got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			if !strings.HasPrefix(err.Error(), filepath.Join("testdata", tt.file)+": ") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestSecretsNeverEchoed(t *testing.T) {
	_, err := Parse([]byte("targets:\n  - name: a\n    source: s3://bucket/x/\n    drill:\n      scratch: mysql://root:hunter2@db/x\n"), env(nil))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v must exist and must not hold the password", err)
	}
}

func TestCompileGlob(t *testing.T) {
	tests := []struct {
		glob, key string
		want      bool
	}{
		{"**/*.dump", "a.dump", true},
		{"**/*.dump", "postgres/2025-12-29T0200Z/backup.dump", true},
		{"**/*.dump", "a.dump.sha256", false},
		{"*.dump", "x/a.dump", false},
		{DefaultMatch, "x/a.sql.gz", true},
		{DefaultMatch, "x/a.sql", true},
		{DefaultMatch, "x/CHECKSUM", false},
		{"crm-????????T????Z.dump", "crm-20251229T0200Z.dump", true},
		{"latest/*.dump", "latest/backup.dump", true},
	}
	for _, tt := range tests {
		re, err := CompileGlob(tt.glob)
		if err != nil {
			t.Fatal(err)
		}
		if got := re.MatchString(tt.key); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.glob, tt.key, got, tt.want)
		}
	}
	if _, err := CompileGlob("{a,b"); err == nil {
		t.Error("unclosed { compiled")
	}
}

func TestExpandEnvLeavesBareDollar(t *testing.T) {
	got, unset := expandEnv("postgres://u:pa$$w0rd@h/${DB}", func(k string) (string, bool) { return "postgres", k == "DB" })
	if got != "postgres://u:pa$$w0rd@h/postgres" || unset != nil {
		t.Errorf("got %q, unset %v", got, unset)
	}
}

func TestExampleConfigsAreValid(t *testing.T) {
	files, _ := filepath.Glob("../deploy/examples/*.yml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		if filepath.Base(f) == "web-config.yml" {
			continue // --web.config.file's, not a config (daemon's TestTLSExampleWebConfig)
		}
		if _, err := Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestKeysAreWhatTheDecoderAccepts(t *testing.T) {
	keys := Keys()
	for _, want := range []string{"listen", "s3.read_timeout", "reports.upload", "targets", "targets[].drill.allow_errors",
		"targets[].checks[].max_drop", "drills.max_concurrent"} {
		if !slices.Contains(keys, want) {
			t.Errorf("Keys() lacks %s", want)
		}
	}
	// Each leaf key, written into a file, is known to the decoder: no "unknown key".
	for _, k := range keys {
		if slices.ContainsFunc(keys, func(o string) bool { return strings.HasPrefix(o, k+".") || strings.HasPrefix(o, k+"[]") }) {
			continue
		}
		var b strings.Builder
		indent := ""
		parts := strings.Split(k, ".")
		for i, p := range parts {
			name, list := strings.CutSuffix(p, "[]")
			if i == len(parts)-1 {
				fmt.Fprintf(&b, "%s%s: null\n", indent, name)
				break
			}
			fmt.Fprintf(&b, "%s%s:\n", indent, name)
			indent += "  "
			if list {
				fmt.Fprintf(&b, "%s- ", indent)
				indent += "  "
				b.WriteString("\n")
			}
		}
		_, err := Parse([]byte(b.String()), func(string) string { return "" })
		if err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("%s: %v\n%s", k, err, b.String())
		}
	}
}

func TestEnvDefaultsAndSizes(t *testing.T) {
	c, err := ParseLookup([]byte(`state_dir: /var/lib/${BV_SUB:-backupverify}
http: {trigger_token: "${BV_TOKEN:-}0123456789abcdef"}
targets:
  - name: crm
    source: file:///b/${BV_EMPTY:-crm}/
    verify: {max_plain_size: 1.5GiB, timeout: 2h}
`), func(k string) (string, bool) {
		if k == "BV_EMPTY" {
			return "", true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/backupverify" || c.Targets[0].Source != "file:///b/crm/" || c.HTTP.TriggerToken != "0123456789abcdef" {
		t.Errorf("defaults not applied: state_dir %q, source %q, token %q", c.StateDir, c.Targets[0].Source, c.HTTP.TriggerToken)
	}
	if v := c.Targets[0].Verify; v.MaxPlainSize != 3<<29 || v.Timeout.D() != 2*time.Hour {
		t.Errorf("verify %+v", v)
	}
}
