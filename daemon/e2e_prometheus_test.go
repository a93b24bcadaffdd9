package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/metrics"
)

// TestPrometheusEndToEnd: the daemon watches the real S3 server; a real
// Prometheus scrapes it with alerts.yaml loaded (its `for:` durations cut to
// seconds; promtool's unit tests prove the real ones). The newest backup goes
// stale, then a corrupt one lands, then a good one: the alerts fire and
// resolve, as Prometheus's own API reports them.
func TestPrometheusEndToEnd(t *testing.T) {
	testenv.LookTool(t, "prometheus", "apt-get install prometheus")
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 300)
	s := testenv.StartS3(t)
	s.CreateBucket(t, "backups")
	dir := t.TempDir()
	freshDump := func() []byte { return dumpBytes(t, pg, "crm", "c") }
	s.Put(t, "backups", "crm/2025-12-29T0100Z.dump", freshDump(), testenv.PutOptions{FullObjectSHA256: true})

	port := testenv.FreePort(t)
	cfgPath := filepath.Join(dir, "backupverify.yml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`listen: 127.0.0.1:%d
state_dir: %s/state
s3: {endpoint: "%s", path_style: true}
targets:
  - name: crm
    source: s3://backups/crm/
    poll: 1s
    rpo: 12s
    backup_grace: 1ms
`, port, dir, s.Endpoint)), 0o644)
	d, err := New(Options{ConfigPath: cfgPath, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testenv.WaitTCP(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)

	// promtool check metrics on a real scrape.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	check := exec.Command(testenv.LookTool(t, "promtool", "apt-get install prometheus"), "check", "metrics")
	check.Stdin = body
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// A real Prometheus with the shipped rules, `for:` cut to seconds.
	rules, err := os.ReadFile("../alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^(\s+for:) \d+m$`).ReplaceAll(rules, []byte("$1 2s"))
	os.WriteFile(filepath.Join(dir, "alerts.yaml"), rules, 0o644)
	api := startPrometheus(t, dir, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%s/alerts.yaml]
scrape_configs:
  - job_name: backupverify
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, dir, port))

	// state of an alert for target crm: "", "pending" or "firing".
	alertState := func(name string) string {
		resp, err := http.Get(api + "alerts")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var out struct {
			Data struct {
				Alerts []struct {
					Labels      map[string]string `json:"labels"`
					Annotations map[string]string `json:"annotations"`
					State       string            `json:"state"`
				} `json:"alerts"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		for _, a := range out.Data.Alerts {
			if a.Labels["alertname"] == name && a.Labels["target"] == "crm" {
				if a.Labels["severity"] == "" || a.Annotations["runbook_url"] == "" {
					t.Errorf("%s has no severity or runbook_url", name)
				}
				return a.State
			}
		}
		return ""
	}
	query := func(q string) string { return promQuery(api, q) }
	waitUntil(t, "Prometheus to scrape a verified backup", 60*time.Second, func() bool {
		return query(`backupverify_backup_checksum_ok{target="crm"}`) == "1"
	})
	if st := alertState("BackupVerifyRPOExceeded"); st != "" {
		t.Fatalf("RPOExceeded is %s with a fresh backup", st)
	}

	// 1. Nothing new arrives: the newest verified backup goes stale.
	waitUntil(t, "BackupVerifyRPOExceeded to fire", 60*time.Second, func() bool {
		return alertState("BackupVerifyRPOExceeded") == "firing"
	})
	// 2. A newer backup lands, corrupt.
	bad := freshDump()
	good := bytes.Clone(bad)
	bad[len(bad)/2] ^= 0x40
	sum := sha256hex(good)
	s.Put(t, "backups", "crm/2025-12-29T0200Z.dump", bad, testenv.PutOptions{MetaSHA256: sum})
	waitUntil(t, "BackupVerifyChecksumFailed to fire", 60*time.Second, func() bool {
		return alertState("BackupVerifyChecksumFailed") == "firing"
	})
	if st := alertState("BackupVerifyRPOExceeded"); st != "firing" {
		t.Errorf("a corrupt backup must not make RPO look good: RPOExceeded is %q", st)
	}
	if v := query(`backupverify_backup_verify_failures_total{target="crm",reason="mismatch"}`); v != "1" {
		t.Errorf("mismatch failures = %q, want 1", v)
	}
	// 3. A good, fresh backup lands: both resolve.
	s.Put(t, "backups", "crm/2025-12-29T0300Z.dump", freshDump(), testenv.PutOptions{FullObjectSHA256: true})
	waitUntil(t, "both alerts to resolve", 60*time.Second, func() bool {
		return alertState("BackupVerifyRPOExceeded") == "" && alertState("BackupVerifyChecksumFailed") == ""
	})
}

func sha256hex(b []byte) string { return sum(b) }

// startPrometheus runs a real Prometheus on the configuration yml (written
// into dir, its TSDB there too) on a free loopback port until the test ends,
// and returns its API's base URL. Its log is shown if the test fails.
func startPrometheus(t *testing.T, dir, yml string) string {
	t.Helper()
	prom := testenv.LookTool(t, "prometheus", "apt-get install prometheus")
	pport := testenv.FreePort(t)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	pcmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", pport), "--log.level=warn")
	var plog bytes.Buffer
	pcmd.Stdout, pcmd.Stderr = &plog, &plog
	if err := pcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pcmd.Process.Kill()
		pcmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", plog.String())
		}
	})
	return fmt.Sprintf("http://127.0.0.1:%d/api/v1/", pport)
}

// promQuery is the value of the first series of an instant query against
// Prometheus's API at api, "" if there is none (yet).
func promQuery(api, q string) string {
	resp, err := http.Get(api + "query?query=" + url.QueryEscape(q))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if len(out.Data.Result) == 0 {
		return ""
	}
	return fmt.Sprint(out.Data.Result[0].Value[1])
}

// specMetrics are the metric names of SPEC §5, §9 and the team's metric
// contract (the BRIEF): each must also be in metrics.Names().
var specMetrics = []string{
	"backupverify_watch_start_timestamp_seconds", "backupverify_backup_download_failing",
	"backupverify_drill_last_failure_phase", "backupverify_drills_aborted_total",
	"backupverify_state_write_errors_total", "backupverify_report_errors_total", "backupverify_check_lag_seconds",
	"backupverify_backup_info", "backupverify_backups_present", "backupverify_backup_oldest_timestamp_seconds",
	"backupverify_build_info", "backupverify_config_last_reload_successful",
	"backupverify_config_last_reload_success_timestamp_seconds", "backupverify_backup_last_timestamp_seconds",
	"backupverify_backup_verified_timestamp_seconds", "backupverify_rpo_seconds", "backupverify_rpo_target_seconds",
	"backupverify_backup_size_bytes", "backupverify_backup_checksum_ok", "backupverify_backups_verified_total",
	"backupverify_backup_verify_failures_total", "backupverify_backup_missed",
	"backupverify_scan_last_success_timestamp_seconds", "backupverify_scan_errors_total",
	"backupverify_drill_last_run_timestamp_seconds", "backupverify_drill_last_success_timestamp_seconds",
	"backupverify_drill_success", "backupverify_drills_total", "backupverify_drill_failures_total",
	"backupverify_rto_seconds", "backupverify_rto_target_seconds", "backupverify_drill_phase_seconds",
	"backupverify_drill_backup_timestamp_seconds", "backupverify_drill_interval_seconds",
	"backupverify_drill_in_progress", "backupverify_next_drill_timestamp_seconds",
	"backupverify_check_ok", "backupverify_check_value", "backupverify_loop_restarts_total",
}

// TestMetricNamesMatchSpec: after a verification and a drill with checks,
// the scrape's backupverify_* names are exactly SPEC §5's, and the standard
// go_* and process_* collectors are there.
func TestMetricNamesMatchSpec(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	dir := t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	d, base := startDaemon(t, fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
targets:
  - name: crm
    source: file://%s/b/
    backup_schedule: "@hourly"
    checks:
      - count: leads
        min: 1
      - freshness: leads.created_at
        max_lag: 1000d
`, dir, dir))
	d.sched.RunNow("crm", "test")
	var m map[string]float64
	waitUntil(t, "a verification and a drill", 60*time.Second, func() bool {
		m = scrapeURL(t, base+"/metrics")
		return m[`backupverify_drill_success{target="crm"}`] == 1 && m[`backupverify_backup_checksum_ok{target="crm"}`] == 1
	})
	names := map[string]bool{}
	var goProc int
	for series := range m {
		name, _, _ := strings.Cut(series, "{")
		switch {
		case strings.HasPrefix(name, "backupverify_"):
			names[name] = true
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
			goProc++
		}
	}
	var got []string
	for n := range names {
		got = append(got, n)
	}
	want := append([]string(nil), specMetrics...)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("metric names differ from SPEC §5\n got: %v\nwant: %v", got, want)
	}
	listed := metrics.Names()
	sort.Strings(listed)
	if strings.Join(listed, "\n") != strings.Join(want, "\n") {
		t.Errorf("metrics.Names() differs from SPEC §5\n got: %v\nwant: %v", listed, want)
	}
	if goProc == 0 {
		t.Error("no go_* or process_* metrics")
	}
	// Every phase and reason exists from the start, at 0 where nothing happened.
	for _, s := range []string{`backupverify_drill_failures_total{phase="checks",target="crm"}`,
		`backupverify_backup_verify_failures_total{reason="download_error",target="crm"}`,
		`backupverify_report_errors_total{op="upload"}`, `backupverify_report_errors_total{op="write"}`,
		`backupverify_drills_aborted_total{target="crm"}`, `backupverify_state_write_errors_total`} {
		if v, ok := m[s]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", s, v, ok)
		}
	}
}
