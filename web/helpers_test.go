package web

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/backupverify/backupverify/daemon"
	"github.com/backupverify/backupverify/internal/testenv"
)

// Shared test helpers (internal/testenv).
var (
	putBackup = testenv.PutBackup
	testLog   = testenv.Logger
	get       = testenv.Get
	waitUntil = testenv.Eventually
)

func dumpBytes(t *testing.T, pg *testenv.Postgres, db, format string, extra ...string) []byte {
	t.Helper()
	return pg.DumpBytes(t, db, format, extra...)
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
