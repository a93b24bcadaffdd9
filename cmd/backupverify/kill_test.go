package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

// TestSIGKILLMidDrillThenRestart kills the daemon while two drills restore
// (one embedded, one on a scratch server), then starts it again: the restart
// must sweep every scratch database, cluster and temporary file.
func TestSIGKILLMidDrillThenRestart(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	dir := t.TempDir()
	bin := filepath.Join(dir, "backupverify")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	dump := filepath.Join(dir, "dump.sql")
	pg.Dump(t, "crm", "p", dump)
	plain, _ := os.ReadFile(dump)
	i := strings.Index(string(plain), "-- PostgreSQL database dump complete")
	slow := append(append([]byte{}, plain[:i]...), []byte("SELECT pg_sleep(300);\n"+string(plain[i:]))...)
	os.MkdirAll(filepath.Join(dir, "backups"), 0o755)
	os.WriteFile(filepath.Join(dir, "backups", "db.sql"), slow, 0o644)
	s := sha256.Sum256(slow)
	os.WriteFile(filepath.Join(dir, "backups", "db.sql.sha256"), []byte(hex.EncodeToString(s[:])+"\n"), 0o644)
	port := testenv.FreePort(t)
	state := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "c.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: 127.0.0.1:%d
state_dir: %s
drills: {max_concurrent: 2}
http: {trigger_token: "${TEST_TRIGGER_TOKEN}"}
targets:
  - {name: emb, source: "file://%s/backups/"}
  - name: srv
    source: file://%s/backups/
    drill: {scratch: "postgres://%s@/postgres?host=%s&port=5432&sslmode=disable"}
`, port, state, dir, dir, pg.Superuser, pg.SocketDir())), 0o644)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--config", cfg, "--log-format", "json")
		cmd.Env = append(os.Environ(), "TEST_TRIGGER_TOKEN=s3cret-token-0123456789")
		logf, _ := os.OpenFile(filepath.Join(dir, "daemon.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "readyz", 30*time.Second, func() bool {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		return cmd
	}
	leftovers := func() []string { return testenv.Leftovers(t, state, "", pg) }

	d := start()
	for _, target := range []string{"emb", "srv"} {
		req, _ := http.NewRequest("POST", base+"/api/v1/targets/"+target+"/drill", nil)
		req.Header.Set("Authorization", "Bearer wrong")
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a wrong token: %v %v, want 401", err, resp)
		}
		req.Header.Set("Authorization", "Bearer s3cret-token-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("trigger %s: %v %v", target, err, resp)
		}
	}
	waitFor(t, "both restores to be under way", 60*time.Second, func() bool {
		return pg.Exec(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()") == "1" &&
			len(leftovers()) >= 4 // srv: tmp + database; emb: tmp + cluster
	})
	if err := d.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.Wait()
	if l := leftovers(); len(l) < 4 {
		t.Fatalf("expected the killed drills to leave things behind, found %v", l)
	}

	d = start()
	waitFor(t, "the restart to sweep", 30*time.Second, func() bool { return len(leftovers()) == 0 })

	// SIGHUP with a broken config keeps the running one and says so.
	good, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(good, []byte("bogus_key: 1\n")...), 0o644)
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the failed reload to show", 10*time.Second, func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "\nbackupverify_config_last_reload_successful 0\n")
	})
	os.WriteFile(cfg, good, 0o644)
	d.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the good reload to show", 10*time.Second, func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "\nbackupverify_config_last_reload_successful 1\n")
	})
	if err := d.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d.Wait(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "daemon.log"))
		t.Fatalf("exit after SIGTERM: %v\n%s", err, log)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "daemon.log")); strings.Contains(string(log), "s3cret-token") {
		t.Error("the trigger token was logged")
	}
	if out, _ := exec.Command("pgrep", "-f", state).Output(); len(out) > 0 {
		t.Errorf("processes still running from the state dir: %s", out)
	}
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, what, within, cond)
}
