package daemon

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
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
