package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// PutBackup writes a backup named name into dir, with a CHECKSUM manifest
// (sha256sum format) beside it.
func PutBackup(t testing.TB, dir, name string, body []byte) {
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

// DumpBytes is pg_dump of db in format (c, p...) as bytes.
func (p *Postgres) DumpBytes(t testing.TB, db, format string, extra ...string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dump")
	p.Dump(t, db, format, path, extra...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Logger logs to stderr under go test -v, else nowhere.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Get fetches url and returns its status, Content-Type and body.
func Get(t testing.TB, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}
