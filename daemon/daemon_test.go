package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/web"
)

func TestDaemonRunReloadShutdown(t *testing.T) {
	dir := t.TempDir()
	plain := "--\n-- PostgreSQL database dump\n--\nSELECT 1;\n--\n-- PostgreSQL database dump complete\n--\n"
	for _, n := range []string{"a", "b"} {
		os.MkdirAll(filepath.Join(dir, n), 0o755)
		os.WriteFile(filepath.Join(dir, n, "db.sql"), []byte(plain), 0o644)
	}
	cfgPath := filepath.Join(dir, "c.yml")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	target := func(n string) string {
		return fmt.Sprintf("  - name: %s\n    source: file://%s/%s/\n    checksum: none\n", n, dir, n)
	}
	head := fmt.Sprintf("listen: 127.0.0.1:0\nstate_dir: %s/state\ntargets:\n", dir)
	write(head + target("a"))

	reload := make(chan struct{})
	addrc := make(chan string, 1)
	d, err := New(Options{ConfigPath: cfgPath, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Build: metrics.BuildInfo{Version: "t", Revision: "r"}, Reload: reload, Listening: func(a string) { addrc <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, web.New(d, testLog(t), time.Now).Register) }()
	base := "http://" + <-addrc
	for _, p := range []string{"/healthz", "/readyz", "/", "/api/v1/status"} {
		resp, err := http.Get(base + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", p, err, resp)
		}
		resp.Body.Close()
	}
	waitFor := func(what string, cond func(map[string]float64) bool) map[string]float64 {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			m := scrapeURL(t, base+"/metrics")
			if cond(m) {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("target a verified", func(m map[string]float64) bool {
		return m[`backupverify_backups_verified_total{target="a"}`] == 1 && m["backupverify_config_last_reload_successful"] == 1
	})
	if m := scrapeURL(t, base+"/metrics"); m[`backupverify_build_info{goversion="`+runtime.Version()+`",revision="r",version="t"}`] != 1 {
		t.Errorf("build_info missing")
	}

	// Reload adding a target.
	write(head + target("a") + target("b"))
	reload <- struct{}{}
	waitFor("target b added", func(m map[string]float64) bool {
		return m[`backupverify_backups_verified_total{target="b"}`] == 1
	})
	// A bad config keeps the running one.
	write(head + target("a") + "    bogus: 1\n")
	reload <- struct{}{}
	m := waitFor("failed reload recorded", func(m map[string]float64) bool {
		return m["backupverify_config_last_reload_successful"] == 0
	})
	if _, ok := m[`backupverify_backups_verified_total{target="b"}`]; !ok {
		t.Error("a failed reload dropped target b")
	}
	// Removing a target removes its series.
	write(head + target("b"))
	reload <- struct{}{}
	waitFor("target a removed", func(m map[string]float64) bool {
		_, hasA := m[`backupverify_backups_verified_total{target="a"}`]
		return !hasA && m["backupverify_config_last_reload_successful"] == 1
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// startDaemon runs a daemon on a config and returns its base URL; it is
// stopped at the end of the test.
func startDaemon(t *testing.T, yaml string) (*Daemon, string) {
	t.Helper()
	d, base, stop := runDaemon(t, yaml)
	t.Cleanup(stop)
	return d, base
}

// runDaemon runs a daemon on a config and returns its base URL and what
// stops it (and waits for it). A daemon that fails to start fails the test.
func runDaemon(t *testing.T, yaml string) (*Daemon, string, func()) {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "c.yml")
	os.WriteFile(cfgPath, []byte(yaml), 0o644)
	addrc := make(chan string, 1)
	d, err := New(Options{ConfigPath: cfgPath, Log: testLog(t), Listening: func(a string) { addrc <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, web.New(d, testLog(t), time.Now).Register) }()
	select {
	case a := <-addrc:
		var once sync.Once
		return d, "http://" + a, func() { once.Do(func() { cancel(); <-done }) }
	case err := <-done:
		cancel()
		t.Fatalf("the daemon did not start: %v", err)
		return nil, "", nil
	}
}
