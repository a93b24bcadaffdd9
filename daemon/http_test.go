package daemon

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/verifier"
)

// TestHTTPServerLimits: headers past 64 KiB are refused, and every timeout
// that bounds a slow or idle client is set.
func TestHTTPServerLimits(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(dir+"/b", 0o755)
	_, base := startDaemon(t, fmt.Sprintf("listen: 127.0.0.1:0\nstate_dir: %s/state\ntargets:\n  - {name: crm, source: \"file://%s/b/\"}\n", dir, dir))
	req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
	req.Header.Set("X-Padding", strings.Repeat("x", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB of headers: %d, want 431", resp.StatusCode)
	}
	srv := newHTTPServer(http.NotFoundHandler())
	if srv.ReadHeaderTimeout != 10*time.Second || srv.ReadTimeout != 30*time.Second || srv.WriteTimeout != time.Minute ||
		srv.IdleTimeout != 2*time.Minute || srv.MaxHeaderBytes != 64<<10 {
		t.Errorf("server limits: %+v", srv)
	}
}

// twins is a Snapshotter with two targets of one name: a Gather that fails.
type twins struct{}

func (twins) Statuses() []verifier.Status {
	return []verifier.Status{{Target: "crm"}, {Target: "crm"}}
}

// TestFailedScrapeIsLogged: when the daemon cannot build its series, /metrics
// answers 500 naming the error, and the log says it: nothing else would
// (the counter of handler errors goes down with the failed scrape).
func TestFailedScrapeIsLogged(t *testing.T) {
	var logs bytes.Buffer
	d := &Daemon{log: slog.New(slog.NewTextHandler(&logs, nil))}
	d.reg = metrics.NewRegistry(twins{}, time.Now, metrics.BuildInfo{})
	srv := httptest.NewServer(d.handler(nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "collected before") {
		t.Errorf("/metrics: %d %q", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "metrics scrape failed") || !strings.Contains(logs.String(), "collected before") {
		t.Errorf("log: %q", logs.String())
	}
}
