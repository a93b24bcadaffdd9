package web

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

func TestStatusPageAndReports(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	dir := t.TempDir()
	// A key made to look like markup: the page must escape it.
	putBackup(t, filepath.Join(dir, "b", "<script>alert(1)<"+"/script>"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	os.MkdirAll(filepath.Join(dir, "empty"), 0o755)
	d, base := startDaemon(t, fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
targets:
  - name: crm
    source: file://%s/b/
    checks:
      - count: leads
        min: 1
  - name: never
    source: file://%s/empty/
`, dir, dir, dir))

	// A target that has never seen a backup still has its row.
	code, ct, page := get(t, base+"/")
	if code != 200 || !strings.HasPrefix(ct, "text/html") || !strings.Contains(page, "never") || !strings.Contains(page, "none seen yet") {
		t.Fatalf("status page %d %s:\n%s", code, ct, page)
	}
	d.RunDrill("crm", "test")
	waitUntil(t, "a drill and its report", 60*time.Second, func() bool {
		_, _, page = get(t, base+"/")
		return strings.Contains(page, "PASS") && strings.Contains(page, "all reports")
	})
	if strings.Contains(page, "<script>alert(1)") || !strings.Contains(page, "&lt;script&gt;alert(1)") {
		t.Errorf("a key from the source is not escaped on the page")
	}
	for _, want := range []string{"all 1 pass", "no verified backup", "never drilled", "none seen yet"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	_, _, api := get(t, base+"/api/v1/status")
	if !strings.Contains(api, `"latest_report": "crm/`) || !strings.Contains(api, `"checksum_ok": null`) {
		t.Errorf("status JSON:\n%s", api)
	}

	// The reports are served, as text, and nothing else below /reports is.
	_, _, list := get(t, base+"/reports/crm/")
	name := list[strings.Index(list, `<li>`)+4 : strings.Index(list, `<li>`)+20]
	code, ct, md := get(t, base+"/reports/crm/"+name+".md")
	if code != 200 || !strings.HasPrefix(ct, "text/plain") || !strings.Contains(md, "# Restore drill report: crm") {
		t.Errorf("report %s: %d %s\n%s", name, code, ct, md)
	}
	if code, _, _ := get(t, base+"/reports/crm/"+name+".json"); code != 200 {
		t.Errorf("json report: %d", code)
	}
	for _, bad := range []string{"/reports/crm/HEAD", "/reports/crm/..%2f..%2fc.yml", "/reports/..%2f/", "/reports/crm/pruned.json"} {
		if code, _, _ := get(t, base+bad); code != 404 {
			t.Errorf("GET %s: %d, want 404", bad, code)
		}
	}
	// Without a trigger token the API is read-only.
	resp, err := http.Post(base+"/api/v1/targets/crm/drill", "", nil)
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("trigger without a configured token: %v %v", err, resp.StatusCode)
	}
}

func TestHumanDurations(t *testing.T) {
	for s, want := range map[float64]string{90000: "25h", 3600: "1h", 300: "5m", 76600: "21h16m40s", 3.6: "3.6s", 7200 + 60: "2h1m", 200000: "2d 7h"} {
		if got := human(s); got != want {
			t.Errorf("human(%v) = %q, want %q", s, got, want)
		}
	}
}
