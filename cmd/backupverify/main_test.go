package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	code := exitCode(err, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCommand(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 500)
	dir := t.TempDir()
	dump := filepath.Join(dir, "good", "2025-12-29T0200Z", "backup.dump")
	os.MkdirAll(filepath.Dir(dump), 0o755)
	pg.Dump(t, "crm", "c", dump)
	b, _ := os.ReadFile(dump)
	s := sha256.Sum256(b)
	writeFile(t, filepath.Join(filepath.Dir(dump), "CHECKSUM"), []byte(hex.EncodeToString(s[:])+"  backup.dump\n"))
	bad := bytes.Clone(b)
	bad[len(bad)/2] ^= 0xff
	writeFile(t, filepath.Join(dir, "bad", "db.dump"), bad)
	writeFile(t, filepath.Join(dir, "bad", "db.dump.sha256"), []byte(hex.EncodeToString(s[:])+"\n"))
	cfg := filepath.Join(dir, "c.yml")
	writeFile(t, cfg, []byte(fmt.Sprintf(`state_dir: %s/state
targets:
  - name: good
    source: file://%s/good/
  - name: bad
    source: file://%s/bad/
`, dir, dir, dir)))

	code, out, errOut := runCLI(t, "verify", "--config", cfg, "--log-format", "json")
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "good  OK") || !strings.HasPrefix(lines[1], "bad   FAIL  mismatch: ") {
		t.Errorf("want one verdict line per target, got:\n%s", out)
	}
	code, out, _ = runCLI(t, "verify", "--config", cfg, "--target", "good")
	if code != 0 || !strings.Contains(out, "2025-12-29T0200Z/backup.dump") || !strings.Contains(out, "custom") {
		t.Errorf("exit %d, output %q", code, out)
	}
	if code, _, errOut = runCLI(t, "verify", "--config", cfg, "--target", "nope"); code != 2 || !strings.Contains(errOut, `no target named "nope"`) {
		t.Errorf("unknown target: exit %d, stderr %q", code, errOut)
	}
}

func TestUsageAndConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	writeFile(t, bad, []byte("targets:\n  - name: x\n    sourc: s3://bucket/a/\n"))
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "no command given"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"verify"}, 2, "--config FILE is required"},
		{[]string{"check-config", "--config", bad}, 2, `line 3: targets[0].sourc: unknown key (did you mean "source"?)`},
		{[]string{"check-config", "--config", filepath.Join(dir, "missing.yml")}, 2, "no such file"},
		{[]string{"run", "--config", bad}, 2, "targets[0].source: is required"},
		{[]string{"version", "--log-level", "loud"}, 2, `--log-level "loud"`},
	}
	for _, tt := range tests {
		code, _, errOut := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	// A state_dir that cannot be made fails the start, saying so.
	notDir := filepath.Join(dir, "plainfile")
	writeFile(t, notDir, []byte("x"))
	badState := filepath.Join(dir, "badstate.yml")
	writeFile(t, badState, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nstate_dir: %s/state\ntargets:\n  - {name: a, source: \"file://%s/\"}\n", notDir, dir)))
	if code, _, errOut := runCLI(t, "run", "--config", badState); code != 1 || !strings.Contains(errOut, "state_dir") {
		t.Errorf("run with an unusable state_dir: exit %d, stderr %q", code, errOut)
	}
	code, out, _ := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "backupverify ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestDrillAndReportsVerifyCommands(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	dir := t.TempDir()
	dump := filepath.Join(dir, "b", "db.dump")
	os.MkdirAll(filepath.Dir(dump), 0o755)
	pg.Dump(t, "crm", "c", dump)
	cfg := filepath.Join(dir, "c.yml")
	writeFile(t, cfg, []byte(fmt.Sprintf("state_dir: %s/state\ntargets:\n  - name: crm\n    source: file://%s/b/\n    checksum: none\n", dir, dir)))
	for i := range 3 {
		code, out, errOut := runCLI(t, "drill", "--config", cfg, "--log-format", "json")
		if code != 0 || !strings.Contains(out, "## 1. Outcome: PASS") {
			t.Fatalf("drill %d: exit %d\n%s\n%s", i, code, out, errOut)
		}
		time.Sleep(1100 * time.Millisecond) // report names have one-second resolution
	}
	if code, out, _ := runCLI(t, "drill", "--config", cfg, "--format", "json"); code != 0 || !strings.Contains(out, `"previous_sha256"`) {
		t.Errorf("drill --format json: %d\n%s", code, out)
	}
	code, out, _ := runCLI(t, "reports", "verify", "--config", cfg)
	if code != 0 || !strings.Contains(out, "crm: OK, 4 report(s), chain intact") {
		t.Fatalf("intact chain: %d %s", code, out)
	}
	reports, _ := filepath.Glob(filepath.Join(dir, "state", "reports", "crm", "*.json"))
	b, _ := os.ReadFile(reports[0])
	os.WriteFile(reports[0], bytes.Replace(b, []byte(`"pass": true`), []byte(`"pass": false`), 1), 0o644)
	os.Remove(reports[2])
	code, out, _ = runCLI(t, "reports", "verify", "--config", cfg, "--target", "crm")
	n0, n2 := strings.TrimSuffix(filepath.Base(reports[0]), ".json"), strings.TrimSuffix(filepath.Base(reports[2]), ".json")
	if code != 1 || !strings.Contains(out, n0+": altered") || !strings.Contains(out, n2+": missing") {
		t.Errorf("exit %d, want 1 naming %s altered and %s missing:\n%s", code, n0, n2, out)
	}
	// A configured target whose whole reports folder is gone, while
	// drill.json records its drills, is broken too.
	os.RemoveAll(filepath.Join(dir, "state", "reports", "crm"))
	code, out, _ = runCLI(t, "reports", "verify", "--config", cfg)
	if code != 1 || !strings.Contains(out, "crm: BROKEN") || !strings.Contains(out, "crm/: missing: the target's reports folder is gone") {
		t.Errorf("deleted folder: exit %d, want 1 naming crm/ missing:\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, "reports", "list", "--config", cfg); code != 2 || !strings.Contains(errOut, `only subcommand is "verify"`) {
		t.Errorf("reports list: %d %s", code, errOut)
	}
}
