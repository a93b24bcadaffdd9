package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/scheduler"
)

func TestSuperviseRestartsAPanickingLoop(t *testing.T) {
	defer func(b struct{ min, max time.Duration }) { loopBackoff = b }(loopBackoff)
	loopBackoff.min, loopBackoff.max = 10*time.Millisecond, 40*time.Millisecond
	var logs bytes.Buffer
	d := &Daemon{log: slog.New(slog.NewTextHandler(&logs, nil))}
	d.reg = metrics.NewRegistry(d, time.Now, metrics.BuildInfo{})
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.supervise(ctx, "watch", "crm", func(ctx context.Context) error {
			switch calls.Add(1) {
			case 1, 2:
				var s []int
				_ = s[calls.Load()] // a real runtime panic: index out of range
			case 3:
				return errors.New("listing gave up")
			}
			<-ctx.Done()
			return nil
		})
	}()
	testenv.Eventually(t, "the fourth start", 5*time.Second, func() bool { return calls.Load() == 4 })
	var got dto.Metric
	if err := d.reg.LoopRestarts.WithLabelValues("watch").Write(&got); err != nil || got.GetCounter().GetValue() != 3 {
		t.Errorf("loop_restarts_total{loop=watch} = %v (%v), want 3", got.GetCounter().GetValue(), err)
	}
	cancel()
	<-done
	if calls.Load() != 4 {
		t.Errorf("%d starts after a clean stop, want 4", calls.Load())
	}
	if !strings.Contains(logs.String(), "index out of range") || !strings.Contains(logs.String(), "stack=") {
		t.Errorf("the log lacks the panic and its stack:\n%s", logs.String())
	}
}

func TestStateDirLock(t *testing.T) {
	dir := t.TempDir()
	release, err := LockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockStateDir(dir)
	if !errors.Is(err, ErrStateDirBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second lock: %v, want busy naming pid %d", err, os.Getpid())
	}
	release()
	release2, err := LockStateDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()

	// A running daemon holds its state_dir.
	state := filepath.Join(t.TempDir(), "state")
	src := t.TempDir()
	startDaemon(t, fmt.Sprintf("listen: 127.0.0.1:0\nstate_dir: %s\ntargets:\n  - {name: crm, source: \"file://%s/\"}\n", state, src))
	if _, err := LockStateDir(state); !errors.Is(err, ErrStateDirBusy) {
		t.Errorf("lock of a running daemon's state_dir: %v, want busy", err)
	}
}

// TestReloadDuringADrillTwice: two reloads that change a target while its
// drill runs neither start a second drill of it nor reset its counters, and
// /metrics answers while each reload waits for the watch loop to stop.
func TestReloadDuringADrillTwice(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	dir := t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.sql", slowPlainDump(t, pg, "crm", 4*time.Second))
	cfg := func(rto string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
targets:
  - {name: crm, source: "file://%s/b/", checksum: manifest, rto: %s}
  - {name: other, source: "file://%s/b/", checksum: manifest}
`, dir, dir, rto, dir)
	}
	d, base := startDaemon(t, cfg("1h"))
	if err := d.RunDrill("crm", "test"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the restore to sleep", 60*time.Second, func() bool {
		return pg.Exec(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(4)%' AND pid <> pg_backend_pid()") != "0" ||
			hasSleepingCluster(t, dir+"/state")
	})
	for i, rto := range []string{"2h", "3h"} {
		if err := os.WriteFile(d.opt.ConfigPath, []byte(cfg(rto)), 0o644); err != nil {
			t.Fatal(err)
		}
		reloaded := make(chan error, 1)
		go func() { reloaded <- d.Reload(context.Background()) }()
		start := time.Now()
		m := scrapeURL(t, base+"/metrics")
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("reload %d: /metrics took %s", i+1, took)
		}
		if err := <-reloaded; err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		if m[`backupverify_drill_in_progress{target="crm"}`] != 1 {
			t.Errorf("reload %d: drill_in_progress = %v during the drill", i+1, m[`backupverify_drill_in_progress{target="crm"}`])
		}
		if err := d.RunDrill("crm", "test"); !errors.Is(err, scheduler.ErrRunning) {
			t.Errorf("reload %d: a second drill of crm could start: RunDrill = %v", i+1, err)
		}
		if s := d.Statuses()[0]; !s.Drill.InProgress || s.RTOTarget != time.Duration(i+2)*time.Hour {
			t.Errorf("reload %d: status in progress %v, rto %s", i+1, s.Drill.InProgress, s.RTOTarget)
		}
	}
	var m map[string]float64
	waitUntil(t, "the drill to end", 60*time.Second, func() bool {
		m = scrapeURL(t, base+"/metrics")
		return m[`backupverify_drill_in_progress{target="crm"}`] == 0
	})
	if m[`backupverify_drills_total{target="crm"}`] != 1 || m[`backupverify_drill_success{target="crm"}`] != 1 {
		t.Errorf("after two reloads: drills_total %v, success %v; want 1 and 1 (the drill under the old config, seen by the new)",
			m[`backupverify_drills_total{target="crm"}`], m[`backupverify_drill_success{target="crm"}`])
	}
	if v := m[`backupverify_rto_target_seconds{target="crm"}`]; v != 3*3600 {
		t.Errorf("rto_target = %v, want the reloaded 3h", v)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "state", "reports", "crm"))
	var reports int
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") && e.Name() != "pruned.json" {
			reports++
		}
	}
	if reports != 1 {
		t.Errorf("%d reports of crm, want 1", reports)
	}
}
