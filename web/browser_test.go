package web

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

// chromium runs Debian's Chromium headless with the flags that keep it off
// the network, and returns what it printed.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin := testenv.LookTool(t, "chromium", "apt-get install chromium")
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir()}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, errb.String())
	}
	return out.String()
}

// TestStatusPageInChromium renders the status page in a real browser: a
// passing target, one whose newest backup is corrupt, one never verified.
// BACKUPVERIFY_SCREENSHOT=path keeps a screenshot.
func TestStatusPageInChromium(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 500)
	dir := t.TempDir()
	good := dumpBytes(t, pg, "crm", "c")
	putBackup(t, filepath.Join(dir, "crm", "2025-12-29T0200Z"), "backup.dump", good)
	putBackup(t, filepath.Join(dir, "billing", "2025-12-29T0200Z"), "backup.dump", good)
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0xff
	os.WriteFile(filepath.Join(dir, "billing", "2025-12-29T0200Z", "backup.dump"), bad, 0o644)
	os.MkdirAll(filepath.Join(dir, "ledger"), 0o755)
	d, base := startDaemon(t, fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
targets:
  - name: crm
    source: file://%s/crm/
    rpo: 1h
    rto: 5m
    checks:
      - count: leads
        min: 1
      - orphans: leads.contact_id -> contacts.id
  - name: billing
    source: file://%s/billing/
    backup_grace: 1ms
  - name: ledger
    source: file://%s/ledger/
    backup_schedule: "*/5 * * * *"
    backup_grace: 1ms
`, dir, dir, dir, dir))
	d.RunDrill("crm", "test")
	waitUntil(t, "the drill", 60*time.Second, func() bool {
		_, _, page := get(t, base+"/")
		return strings.Contains(page, "all 2 pass") && strings.Contains(page, "FAIL: mismatch")
	})
	dom := chromium(t, "--dump-dom", base+"/")
	for _, want := range []string{"<h1>backupverify</h1>", ">crm<", ">billing<", ">ledger<", "FAIL: mismatch",
		"PASS", "all 2 pass", "none seen yet", "never drilled", "no verified backup", `href="/reports/crm/`} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page as Chromium parsed it lacks %q", want)
		}
	}
	if rows := strings.Count(dom, "<tr>"); rows != 4 {
		t.Errorf("%d table rows, want a header and 3 targets", rows)
	}
	shot := os.Getenv("BACKUPVERIFY_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "status.png")
	}
	chromium(t, "--screenshot="+shot, "--window-size=1700,520", base+"/")
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
}
