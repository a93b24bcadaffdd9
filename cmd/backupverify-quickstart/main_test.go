package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

// TestQuickstartReachesAPassingDrill runs the quick start in a shortened
// mode (backups and drills every few seconds) until its status page shows a
// passing drill, then stops it and checks it cleaned up its sample cluster.
func TestQuickstartReachesAPassingDrill(t *testing.T) {
	dir := t.TempDir()
	port := testenv.FreePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, logs lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--dir", dir, "--listen", "127.0.0.1:" + itoa(port), "--rows", "500",
			"--backup-schedule", "@every 4s", "--drill-schedule", "@yearly"}, &out, &logs)
	}()
	base := "http://127.0.0.1:" + itoa(port)
	deadline := time.Now().Add(150 * time.Second)
	var page string
	for {
		if resp, err := http.Get(base + "/"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			page = string(b)
			if strings.Contains(page, "PASS") && strings.Contains(page, "all 6 pass") && strings.Contains(page, ">latest<") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no passing drill on the status page in time; page:\n%s\nlogs:\n%s", page, logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "status page   http://127.0.0.1:"+itoa(port)+"/") {
		t.Errorf("the quick start did not say where the status page is:\n%s", out.String())
	}
	reports, _ := filepath.Glob(filepath.Join(dir, "state", "reports", "crm", "*.md"))
	if len(reports) == 0 {
		t.Error("no drill report written")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("quick start: %v\n%s", err, logs.String())
	}
	// Not a terminal: --log-format auto writes JSON, without colour codes.
	if l := logs.String(); strings.Contains(l, "\x1b[") || !strings.HasPrefix(l, `{"time":`) {
		t.Errorf("logs into a buffer are not plain JSON:\n%.300s", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "sample-pg")); !os.IsNotExist(err) {
		t.Errorf("the sample cluster was not removed: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// lockedBuffer is written by the quick start while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
