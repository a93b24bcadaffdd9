package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/backupverify/backupverify/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// (PEM) to certFile and keyFile, and returns the certificate's pool.
func selfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "backupverify test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return pool
}

// runDaemonWeb runs a daemon with a web config; it returns the bound address
// and the error Run returned at once, if it did not start.
func runDaemonWeb(t *testing.T, dir, webConfig string, log *slog.Logger) (string, error) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, "b"), 0o755)
	cfgPath := filepath.Join(dir, "backupverify.yml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
targets:
  - name: crm
    source: file://%s/b/
`, dir, dir)), 0o644)
	addrc := make(chan string, 1)
	d, err := New(Options{ConfigPath: cfgPath, WebConfigFile: webConfig, Log: log, Listening: func(a string) { addrc <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	select {
	case a := <-addrc:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
		return a, nil
	case err := <-done:
		cancel()
		return "", err
	}
}

// TestTLSBasicAuthScrape: with a web config that asks for TLS and basic auth
// (--web.config.file), the endpoint refuses plain HTTP, a request without
// or with wrong credentials and a client that does not trust the
// certificate; the daemon's header cap still holds; and a real Prometheus
// scrapes it over TLS with basic_auth and tls_config (up == 1), while a job
// without credentials gets up == 0.
func TestTLSBasicAuthScrape(t *testing.T) {
	testenv.LookTool(t, "prometheus", "apt-get install prometheus")
	dir := t.TempDir()
	pool := selfSigned(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// Relative paths: the toolkit resolves them from the web config's folder.
	webCfg := filepath.Join(dir, "web-config.yml")
	os.WriteFile(webCfg, []byte(fmt.Sprintf(`tls_server_config:
  cert_file: cert.pem
  key_file: key.pem
basic_auth_users:
  prometheus: %s
`, hash)), 0o644)
	var logBuf syncBuffer
	addr, err := runDaemonWeb(t, dir, webCfg, slog.New(slog.NewJSONHandler(&logBuf, nil)))
	if err != nil {
		t.Fatalf("the daemon did not start: %v", err)
	}

	get := func(c *http.Client, url, user, pass string, hdr http.Header) (int, string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	metricsURL := "https://" + addr + "/metrics"

	// The right user over TLS gets the metrics.
	code, body, err := get(trusting, metricsURL, "prometheus", "s3cret pass", nil)
	if err != nil || code != 200 || !strings.Contains(body, "backupverify_build_info") {
		t.Fatalf("TLS with credentials: %d %v\n%.300s", code, err, body)
	}
	// Plain HTTP gets no metrics.
	code, body, err = get(&http.Client{Timeout: 10 * time.Second}, "http://"+addr+"/metrics", "prometheus", "s3cret pass", nil)
	if err != nil || code != http.StatusBadRequest || strings.Contains(body, "backupverify_") {
		t.Errorf("plain HTTP: %d %v, want 400 without metrics\n%.300s", code, err, body)
	}
	// and the server says so in the daemon's own (here JSON) log.
	waitUntil(t, "the handshake error in the daemon's log", 10*time.Second, func() bool {
		return strings.Contains(logBuf.String(), `{"time":`) && strings.Contains(logBuf.String(), `"level":"WARN","msg":"http: TLS handshake error`)
	})
	// No or wrong credentials, on every path.
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		for _, cred := range [][2]string{{"", ""}, {"prometheus", "wrong"}, {"other", "s3cret pass"}} {
			code, body, err := get(trusting, "https://"+addr+path, cred[0], cred[1], nil)
			if err != nil || code != http.StatusUnauthorized {
				t.Errorf("%s as %q/%q: %d %v, want 401\n%.300s", path, cred[0], cred[1], code, err, body)
			}
		}
	}
	// A client that does not trust the certificate does not get through.
	if _, _, err := get(&http.Client{Timeout: 10 * time.Second}, metricsURL, "prometheus", "s3cret pass", nil); err == nil {
		t.Error("a client without the CA completed the TLS handshake")
	}
	// The daemon's own hardening stays on the server the toolkit runs.
	big := http.Header{"X-Big": {strings.Repeat("a", 128<<10)}}
	if code, _, err := get(trusting, metricsURL, "prometheus", "s3cret pass", big); err != nil || code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB header: %d %v, want 431", code, err)
	}

	os.WriteFile(filepath.Join(dir, "pass"), []byte("s3cret pass"), 0o600)
	api := startPrometheus(t, dir, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: backupverify
    scheme: https
    basic_auth: {username: prometheus, password_file: %[1]s/pass}
    tls_config: {ca_file: %[1]s/cert.pem}
    static_configs: [{targets: ["%[2]s"]}]
  - job_name: no-credentials
    scheme: https
    tls_config: {ca_file: %[1]s/cert.pem}
    static_configs: [{targets: ["%[2]s"]}]
`, dir, addr))
	waitUntil(t, "Prometheus to scrape over TLS with basic auth", 60*time.Second, func() bool {
		return promQuery(api, `up{job="backupverify"}`) == "1" && promQuery(api, `up{job="no-credentials"}`) != ""
	})
	if v := promQuery(api, `up{job="no-credentials"}`); v != "0" {
		t.Errorf("the job without credentials: up = %q, want 0", v)
	}
	if v := promQuery(api, `backupverify_build_info{job="backupverify"}`); v != "1" {
		t.Errorf("backupverify_build_info over TLS = %q, want 1", v)
	}
}

// TestTLSBadWebConfig: a web config that cannot be used (a missing
// certificate, a password that is no bcrypt hash, an unknown key) stops the
// daemon before it listens, with the file named, instead of serving without
// TLS or auth.
func TestTLSBadWebConfig(t *testing.T) {
	for _, bad := range []string{
		"tls_server_config:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n",
		"basic_auth_users:\n  prometheus: plaintext\n",
		"basic_auth_user:\n  prometheus: $2a$10$5oY6H5pm6RyQuID1FEXRf.uLX6NdXsdHJkdjEjw2CaXcaCCe12cV6\n",
	} {
		dir := t.TempDir()
		webCfg := filepath.Join(dir, "web-config.yml")
		os.WriteFile(webCfg, []byte(bad), 0o644)
		_, err := runDaemonWeb(t, dir, webCfg, testLog(t))
		if err == nil || !strings.Contains(err.Error(), webCfg) {
			t.Errorf("Run with web config %q: %v, want an error naming %s", bad, err, webCfg)
		}
	}
}

// TestTLSExampleWebConfig: deploy/examples/web-config.yml works as it says,
// with a certificate and key under the names it gives, beside it, and the
// password its comment names.
func TestTLSExampleWebConfig(t *testing.T) {
	example, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "deploy/examples/web-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	webCfg := filepath.Join(dir, "web-config.yml")
	os.WriteFile(webCfg, example, 0o644)
	pool := selfSigned(t, filepath.Join(dir, "backupverify.crt"), filepath.Join(dir, "backupverify.key"))
	addr, err := runDaemonWeb(t, dir, webCfg, testLog(t))
	if err != nil {
		t.Fatalf("the daemon did not start with the example web config: %v", err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, tc := range []struct {
		user, pass string
		want       int
	}{{"prometheus", "change-me", 200}, {"prometheus", "", 401}, {"", "", 401}} {
		req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("as %q/%q: %d, want %d", tc.user, tc.pass, resp.StatusCode, tc.want)
		}
	}
}
