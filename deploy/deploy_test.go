// Package deploy holds no code: its tests check the files operators deploy
// (alert rules, Prometheus and Alertmanager configs) with the real tools.
package deploy

import (
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (make test installs it): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(tool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestPromtoolCheckRules(t *testing.T) { run(t, "promtool", "check", "rules", "../alerts.yaml") }
func TestPromtoolRuleUnitTests(t *testing.T) {
	run(t, "promtool", "test", "rules", "prometheus/alerts_test.yml")
}
func TestPrometheusConfig(t *testing.T) {
	run(t, "promtool", "check", "config", "--syntax-only", "prometheus/prometheus.yml")
}
func TestAlertmanagerConfig(t *testing.T) {
	run(t, "amtool", "check-config", "alertmanager/alertmanager.yml")
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// specAlerts are the alerts of SPEC §6 with their severities.
var specAlerts = map[string]string{
	"BackupVerifyDown":                 "critical",
	"BackupVerifyAbsent":               "critical",
	"BackupVerifyRPOExceeded":          "critical",
	"BackupVerifyBackupMissed":         "warning",
	"BackupVerifyChecksumFailed":       "critical",
	"BackupVerifyDrillFailed":          "warning",
	"BackupVerifyDrillOverdue":         "critical",
	"BackupVerifyRTOExceeded":          "warning",
	"BackupVerifyIntegrityCheckFailed": "critical",
	"BackupVerifyScanFailing":          "warning",
	"BackupVerifyConfigReloadFailed":   "warning",
}

func TestRulesMatchSpecAndHaveRunbooks(t *testing.T) {
	b, err := os.ReadFile("../alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	runbooks, err := os.ReadFile("../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)$`).FindAllStringSubmatch(string(runbooks), -1) {
		headings[strings.ToLower(m[1])] = true
	}
	tested, _ := os.ReadFile("prometheus/alerts_test.yml")
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			seen[r.Alert] = true
			want, ok := specAlerts[r.Alert]
			if !ok {
				t.Errorf("%s is not an alert of SPEC §6", r.Alert)
				continue
			}
			if r.Labels["severity"] != want {
				t.Errorf("%s: severity %q, want %q", r.Alert, r.Labels["severity"], want)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if !strings.HasSuffix(r.Annotations["runbook_url"], "docs/runbooks.md#"+anchor) || !headings[anchor] {
				t.Errorf("%s: runbook_url %q has no matching section in docs/runbooks.md", r.Alert, r.Annotations["runbook_url"])
			}
			if strings.Contains(r.Expr, "target=") {
				t.Errorf("%s: a rule must serve every target, not name one", r.Alert)
			}
			if !strings.Contains(string(tested), "alertname: "+r.Alert) {
				t.Errorf("%s has no promtool unit test", r.Alert)
			}
		}
	}
	var missing []string
	for a := range specAlerts {
		if !seen[a] {
			missing = append(missing, a)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("alerts of SPEC §6 missing from alerts.yaml: %v", missing)
	}
}
