package web

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/backupverify/backupverify/daemon"
	"github.com/backupverify/backupverify/internal/testenv"
)

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// startDaemon runs a daemon on a config and returns its base URL.
func startDaemon(t *testing.T, yaml string) (*daemon.Daemon, string) {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "c.yml")
	os.WriteFile(cfgPath, []byte(yaml), 0o644)
	addrc := make(chan string, 1)
	d, err := daemon.New(daemon.Options{ConfigPath: cfgPath, Log: testLog(t), Listening: func(a string) { addrc <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, New(d, testLog(t), time.Now).Register) }()
	t.Cleanup(func() { cancel(); <-done })
	return d, "http://" + <-addrc
}

// putBackup writes a backup and its CHECKSUM manifest into dir/<prefix>/.
func putBackup(t *testing.T, dir, name string, body []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(body)
	if err := os.WriteFile(filepath.Join(dir, "CHECKSUM"), []byte(hex.EncodeToString(s[:])+"  "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func dumpBytes(t *testing.T, pg *testenv.Postgres, db, format string, extra ...string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dump")
	pg.Dump(t, db, format, path, extra...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, what, within, cond)
}
