package web

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const testToken = "0123456789abcdef-trigger"

func post(t *testing.T, url, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestHeadersAndAuthLimit: every page carries the headers that stop
// framing, sniffing and script; failed trigger authentications get 401
// five times, then 429 for a while, even with the right token.
func TestHeadersAndAuthLimit(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b"), 0o755)
	t.Setenv("BV_WEB_TEST_TOKEN", testToken)
	_, base := startDaemon(t, fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
http: {trigger_token: "${BV_WEB_TEST_TOKEN}"}
targets:
  - {name: crm, source: "file://%s/b/"}
`, dir, dir))
	for _, path := range []string{"/", "/api/v1/status", "/reports/crm/"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for h, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
			"Content-Security-Policy": contentSecurityPolicy} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, h, got, want)
			}
		}
	}
	url := base + "/api/v1/targets/crm/drill"
	for i := range authBurst {
		if resp := post(t, url, fmt.Sprintf("wrong-token-%02d-xxxxxxxx", i)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad token %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp := post(t, url, "wrong-token-again-xxxxxxxx")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("bad token %d: %d (Retry-After %q), want 429 with Retry-After", authBurst+1, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// The limit is checked before the token: guessing gains nothing.
	if resp := post(t, url, testToken); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the right token while limited: %d, want 429", resp.StatusCode)
	}
}

func TestAuthLimiterRefills(t *testing.T) {
	now := time.Unix(0, 0)
	l := newAuthLimiter(2, time.Minute, func() time.Time { return now })
	l.failed("a")
	l.failed("a")
	if ok, wait := l.allow("a"); ok || wait != time.Minute {
		t.Errorf("after 2 failures: allow %v, wait %s; want false, 1m", ok, wait)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Error("another client is limited too")
	}
	now = now.Add(time.Minute)
	if ok, _ := l.allow("a"); !ok {
		t.Error("still limited a minute later")
	}
}
