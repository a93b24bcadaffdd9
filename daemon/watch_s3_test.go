package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/verifier"
)

// fixtures are real pg_dump archives of a real sample database.
type fixtures struct {
	custom, custom2, plain []byte
	dumpedAfter            time.Time // the custom dump's header time is not before this
}

func makeFixtures(t *testing.T) fixtures {
	t.Helper()
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 2000)
	dir := t.TempDir()
	f := fixtures{dumpedAfter: time.Now().Truncate(time.Second)}
	pg.Dump(t, "crm", "c", filepath.Join(dir, "a.dump"))
	pg.Exec(t, "crm", "INSERT INTO contacts VALUES (999999, 'late@example.com', now())")
	pg.Dump(t, "crm", "c", filepath.Join(dir, "b.dump"))
	pg.Dump(t, "crm", "p", filepath.Join(dir, "a.sql"))
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	f.custom, f.custom2, f.plain = read("a.dump"), read("b.dump"), read("a.sql")
	return f
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func manifest(entries map[string][]byte) []byte {
	var b bytes.Buffer
	for name, content := range entries {
		fmt.Fprintf(&b, "%s  %s\n", sum(content), name)
	}
	return b.Bytes()
}

// harness runs one target's watcher and scrapes its metrics over HTTP.
type harness struct {
	t   *testing.T
	w   *verifier.Watcher
	srv *httptest.Server
}

type statuses []*verifier.Watcher

func (s statuses) Statuses() []verifier.Status {
	var out []verifier.Status
	for _, w := range s {
		out = append(out, w.Status())
	}
	return out
}

func newHarness(t *testing.T, yaml string) *harness {
	t.Helper()
	c, err := config.Parse([]byte(yaml), os.Getenv)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ws, err := NewWatchers(context.Background(), c, "", log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry(statuses(ws), time.Now, metrics.BuildInfo{Version: "test", Revision: "test"})
	d := &Daemon{reg: reg}
	srv := httptest.NewServer(d.handler(nil))
	t.Cleanup(srv.Close)
	return &harness{t: t, w: ws[0], srv: srv}
}

func (h *harness) scan() { h.w.Scan(context.Background()) }

// scrape reads /metrics as Prometheus would and returns every sample by its
// series (name{labels}).
func (h *harness) scrape() map[string]float64 {
	h.t.Helper()
	return scrapeURL(h.t, h.srv.URL+"/metrics")
}

func scrapeURL(t testing.TB, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad exposition line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// expect checks series of target tg: short names without the namespace.
func (h *harness) expect(tg string, want map[string]float64) map[string]float64 {
	h.t.Helper()
	got := h.scrape()
	for k, v := range want {
		name, labels, _ := strings.Cut(k, "{")
		series := fmt.Sprintf(`backupverify_%s{target="%s"}`, name, tg)
		if labels != "" {
			series = fmt.Sprintf(`backupverify_%s{%s,target="%s"}`, name, strings.TrimSuffix(labels, "}"), tg)
		}
		g, ok := got[series]
		if !ok {
			h.t.Errorf("series %s missing from the scrape", series)
			continue
		}
		if g != v {
			h.t.Errorf("%s = %v, want %v", series, g, v)
		}
	}
	return got
}

func zeroFailures(except string, n float64) map[string]float64 {
	m := map[string]float64{}
	for _, r := range verifier.Reasons {
		m[fmt.Sprintf(`backup_verify_failures_total{reason="%s"}`, r)] = 0
	}
	if except != "" {
		m[fmt.Sprintf(`backup_verify_failures_total{reason="%s"}`, except)] = n
	}
	return m
}

func merge(ms ...map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func s3Target(s *testenv.S3, name, prefix, extra string) string {
	return fmt.Sprintf(`
state_dir: %s
s3:
  endpoint: %s
  path_style: true
  max_attempts: 3
  read_timeout: 500ms
targets:
  - name: %s
    source: s3://backups/%s/
    rpo: 1h
%s`, "STATE", s.Endpoint, name, prefix, extra)
}

func TestWatchS3(t *testing.T) {
	fx := makeFixtures(t)
	s := testenv.StartS3(t)
	s.CreateBucket(t, "backups")
	goodOK := merge(zeroFailures("", 0), map[string]float64{
		"backup_checksum_ok": 1, "backups_verified_total": 1, "scan_errors_total": 0, "rpo_target_seconds": 3600,
		"backup_size_bytes": float64(len(fx.custom)),
	})
	cfg := func(t *testing.T, name, extra string) string {
		return strings.Replace(s3Target(s, name, name, extra), "STATE", t.TempDir(), 1)
	}
	checkFresh := func(t *testing.T, got map[string]float64, tg string) {
		t.Helper()
		ts := got[fmt.Sprintf(`backupverify_backup_verified_timestamp_seconds{target="%s"}`, tg)]
		if ts < float64(fx.dumpedAfter.Unix()) || ts > float64(time.Now().Unix()) {
			t.Errorf("verified timestamp %v not within the dump's run (%v..now)", ts, fx.dumpedAfter.Unix())
		}
		if rpo := got[fmt.Sprintf(`backupverify_rpo_seconds{target="%s"}`, tg)]; rpo < 0 || rpo > 600 {
			t.Errorf("rpo_seconds = %v, want a few seconds", rpo)
		}
	}

	t.Run("prefix per backup with CHECKSUM manifest", func(t *testing.T) {
		state := t.TempDir()
		yaml := strings.Replace(s3Target(s, "prefix", "prefix", ""), "STATE", state, 1)
		s.Put(t, "backups", "prefix/2025-12-28T0200Z/backup.dump", fx.custom2, testenv.PutOptions{})
		s.Put(t, "backups", "prefix/2025-12-28T0200Z/CHECKSUM", manifest(map[string][]byte{"backup.dump": fx.custom2}), testenv.PutOptions{})
		time.Sleep(1100 * time.Millisecond) // LastModified has one-second resolution
		s.Put(t, "backups", "prefix/2025-12-29T0200Z/backup.dump", fx.custom, testenv.PutOptions{})
		s.Put(t, "backups", "prefix/2025-12-29T0200Z/CHECKSUM", manifest(map[string][]byte{"backup.dump": fx.custom}), testenv.PutOptions{})
		s.Proxy.ResetGets()
		h := newHarness(t, yaml)
		h.scan()
		checkFresh(t, h.expect("prefix", goodOK), "prefix")
		// A first start verifies the newest only; the older one is catalogued unread.
		if n := s.Proxy.Gets("2025-12-28T0200Z/backup.dump"); n != 0 {
			t.Errorf("older backup downloaded %d times on first start, want 0", n)
		}
		if st := h.w.Status(); st.Catalogued != 2 || st.LastResult.ChecksumFrom != "manifest 2025-12-29T0200Z/CHECKSUM" {
			t.Errorf("catalogued %d (want 2), checksum from %q", st.Catalogued, st.LastResult.ChecksumFrom)
		}
		before := h.scrape()[`backupverify_backup_verified_timestamp_seconds{target="prefix"}`]

		// A restart neither re-downloads nor forgets the newest verified backup.
		s.Proxy.ResetGets()
		h2 := newHarness(t, yaml)
		if got := h2.scrape()[`backupverify_backup_verified_timestamp_seconds{target="prefix"}`]; got != before {
			t.Errorf("after restart, before any scan: verified timestamp %v, want %v", got, before)
		}
		h2.scan()
		h2.expect("prefix", map[string]float64{"backup_checksum_ok": 1, "backups_verified_total": 0})
		if n := s.Proxy.Gets(".dump"); n != 0 {
			t.Errorf("restart re-downloaded %d dumps, want 0", n)
		}
	})

	t.Run("flat files with sha256 sidecars", func(t *testing.T) {
		h := newHarness(t, cfg(t, "flat", ""))
		s.Put(t, "backups", "flat/crm-20251229T0200Z.dump", fx.custom, testenv.PutOptions{})
		s.Put(t, "backups", "flat/crm-20251229T0200Z.dump.sha256", []byte(sum(fx.custom)+"  crm-20251229T0200Z.dump\n"), testenv.PutOptions{})
		h.scan()
		checkFresh(t, h.expect("flat", goodOK), "flat")
	})

	t.Run("latest prefix overwritten in place", func(t *testing.T) {
		h := newHarness(t, cfg(t, "latest", ""))
		s.Put(t, "backups", "latest/latest/backup.dump", fx.custom, testenv.PutOptions{})
		s.Put(t, "backups", "latest/latest/CHECKSUM", manifest(map[string][]byte{"backup.dump": fx.custom}), testenv.PutOptions{})
		h.scan()
		h.expect("latest", goodOK)
		s.Put(t, "backups", "latest/latest/CHECKSUM", manifest(map[string][]byte{"backup.dump": fx.custom2}), testenv.PutOptions{})
		s.Put(t, "backups", "latest/latest/backup.dump", fx.custom2, testenv.PutOptions{})
		h.scan()
		h.expect("latest", map[string]float64{"backup_checksum_ok": 1, "backups_verified_total": 2,
			"backup_size_bytes": float64(len(fx.custom2))})
		s.Proxy.ResetGets()
		h.scan()
		h.expect("latest", map[string]float64{"backups_verified_total": 2})
		if n := s.Proxy.Gets("backup.dump"); n != 0 {
			t.Errorf("an unchanged backup was downloaded %d times, want 0", n)
		}
	})

	t.Run("S3 full-object sha256 checksum", func(t *testing.T) {
		h := newHarness(t, cfg(t, "fullobj", ""))
		s.Put(t, "backups", "fullobj/db.dump", fx.custom, testenv.PutOptions{FullObjectSHA256: true})
		h.scan()
		h.expect("fullobj", goodOK)
		if from := h.w.Status().LastResult.ChecksumFrom; from != "s3 object checksum" {
			t.Errorf("checksum from %q", from)
		}
	})

	t.Run("x-amz-meta-sha256 metadata", func(t *testing.T) {
		h := newHarness(t, cfg(t, "meta", "    checksum: s3\n"))
		s.Put(t, "backups", "meta/db.dump", fx.custom, testenv.PutOptions{MetaSHA256: sum(fx.custom)})
		h.scan()
		h.expect("meta", goodOK)
	})

	t.Run("bit flip is a mismatch", func(t *testing.T) {
		h := newHarness(t, cfg(t, "flip", ""))
		bad := bytes.Clone(fx.custom)
		bad[len(bad)/2] ^= 0x01
		s.Put(t, "backups", "flip/db.dump", bad, testenv.PutOptions{})
		s.Put(t, "backups", "flip/CHECKSUM", manifest(map[string][]byte{"db.dump": fx.custom}), testenv.PutOptions{})
		h.scan()
		got := h.expect("flip", merge(zeroFailures("mismatch", 1), map[string]float64{
			"backup_checksum_ok": 0, "backups_verified_total": 0, "backup_verified_timestamp_seconds": 0}))
		if rpo := got[`backupverify_rpo_seconds{target="flip"}`]; rpo < float64(time.Now().Unix()-5) {
			t.Errorf("rpo_seconds with no verified backup = %v, want the whole epoch (never)", rpo)
		}
	})

	t.Run("truncated dump with a manifest computed after truncation", func(t *testing.T) {
		h := newHarness(t, cfg(t, "trunc", ""))
		cut := fx.custom[:len(fx.custom)*2/3]
		s.Put(t, "backups", "trunc/db.dump", cut, testenv.PutOptions{})
		s.Put(t, "backups", "trunc/CHECKSUM", manifest(map[string][]byte{"db.dump": cut}), testenv.PutOptions{})
		h.scan()
		h.expect("trunc", merge(zeroFailures("unreadable_archive", 1), map[string]float64{"backup_checksum_ok": 0}))
		if r := h.w.Status().LastResult; r.Reader != "native" || !strings.Contains(r.Error, "truncated") {
			t.Errorf("reader %q, error %q: want the native reader to say the archive is truncated", r.Reader, r.Error)
		}
	})

	t.Run("missing manifest", func(t *testing.T) {
		h := newHarness(t, cfg(t, "nomanifest", "    checksum: manifest\n    backup_grace: 1ms\n"))
		s.Put(t, "backups", "nomanifest/db.dump", fx.custom, testenv.PutOptions{})
		h.scan()
		h.expect("nomanifest", merge(zeroFailures("missing_checksum", 1), map[string]float64{"backup_checksum_ok": 0}))
	})

	t.Run("manifest without an entry for the dump", func(t *testing.T) {
		h := newHarness(t, cfg(t, "noentry", "    backup_grace: 1ms\n"))
		s.Put(t, "backups", "noentry/db.dump", fx.custom, testenv.PutOptions{})
		s.Put(t, "backups", "noentry/CHECKSUM", manifest(map[string][]byte{"other.dump": fx.custom}), testenv.PutOptions{})
		h.scan()
		h.expect("noentry", merge(zeroFailures("missing_checksum", 1), map[string]float64{"backup_checksum_ok": 0}))
		if e := h.w.Status().LastResult.Error; !strings.Contains(e, "no entry for db.dump") {
			t.Errorf("error %q does not name the missing entry", e)
		}
	})

	t.Run("checksum not written yet within grace is not a failure", func(t *testing.T) {
		h := newHarness(t, cfg(t, "pending", "    backup_grace: 1h\n"))
		s.Put(t, "backups", "pending/db.dump", fx.custom, testenv.PutOptions{})
		h.scan()
		got := h.expect("pending", merge(zeroFailures("", 0), map[string]float64{"backups_verified_total": 0}))
		if v, ok := got[`backupverify_backup_checksum_ok{target="pending"}`]; ok {
			t.Errorf("backup_checksum_ok = %v before any verification finished; want it absent", v)
		}
		s.Put(t, "backups", "pending/CHECKSUM", manifest(map[string][]byte{"db.dump": fx.custom}), testenv.PutOptions{})
		h.scan()
		h.expect("pending", goodOK)
	})

	t.Run("S3 answering 503 then recovering", func(t *testing.T) {
		h := newHarness(t, cfg(t, "slowdown", ""))
		s.Put(t, "backups", "slowdown/db.dump", fx.custom, testenv.PutOptions{FullObjectSHA256: true})
		s.Proxy.Fail503(2) // within max_attempts: retried with backoff
		h.scan()
		h.expect("slowdown", merge(goodOK, map[string]float64{"scan_errors_total": 0}))

		s.Put(t, "backups", "slowdown/db2.dump", fx.custom2, testenv.PutOptions{FullObjectSHA256: true})
		s.Proxy.Fail503(1000) // an outage: the listing fails
		h.scan()
		got := h.expect("slowdown", map[string]float64{"scan_errors_total": 1, "backups_verified_total": 1})
		lastOK := got[`backupverify_scan_last_success_timestamp_seconds{target="slowdown"}`]
		s.Proxy.Fail503(0)
		time.Sleep(10 * time.Millisecond)
		h.scan()
		got = h.expect("slowdown", map[string]float64{"scan_errors_total": 1, "backups_verified_total": 2, "backup_checksum_ok": 1})
		if now := got[`backupverify_scan_last_success_timestamp_seconds{target="slowdown"}`]; now <= lastOK {
			t.Errorf("scan_last_success did not move after recovery: %v <= %v", now, lastOK)
		}
	})

	t.Run("stalled body is resumed", func(t *testing.T) {
		h := newHarness(t, cfg(t, "stall", ""))
		s.Put(t, "backups", "stall/db.dump", fx.custom, testenv.PutOptions{FullObjectSHA256: true})
		s.Proxy.ResetGets()
		s.Proxy.Stall("stall/db.dump", int64(len(fx.custom)/3), 1)
		h.scan()
		h.expect("stall", goodOK)
		if n := s.Proxy.Gets("stall/db.dump"); n != 2 {
			t.Errorf("GETs of the stalled object = %d, want 2 (the stalled one and a ranged resume)", n)
		}
	})

	t.Run("body that keeps stalling is a download error", func(t *testing.T) {
		h := newHarness(t, cfg(t, "stuck", ""))
		s.Put(t, "backups", "stuck/db.dump", fx.custom, testenv.PutOptions{FullObjectSHA256: true})
		s.Proxy.Stall("stuck/db.dump", 4096, 100) // 3 attempts of 4 KiB cannot cover the dump
		start := time.Now()
		h.scan()
		s.Proxy.Stall("", 0, 0)
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("gave up after %s; a stalled body must not hang the loop", d)
		}
		// A download error is no verdict: checksum_ok stays unknown, and the
		// backup is flagged as failing to download until a read succeeds.
		got := h.expect("stuck", merge(zeroFailures("download_error", 1), map[string]float64{"backup_download_failing": 1}))
		if v, ok := got[`backupverify_backup_checksum_ok{target="stuck"}`]; ok {
			t.Errorf("backup_checksum_ok = %v after a download error; want it absent (no verdict yet)", v)
		}
		if e := h.w.Status().DownloadError; !strings.Contains(e, "stalled") {
			t.Errorf("error %q does not say the body stalled", e)
		}
	})

	t.Run("backup dated in the future", func(t *testing.T) {
		h := newHarness(t, cfg(t, "future", ""))
		// The archive header says it was made a year from now; the object
		// was uploaded now. The backup counts from its upload, not from the
		// header, so RPO never looks better than it is.
		future := bytes.Clone(fx.custom)
		setHeaderYear(t, future, time.Now().Year()+1)
		s.Put(t, "backups", "future/db.dump", future, testenv.PutOptions{FullObjectSHA256: true})
		h.scan()
		got := h.expect("future", goodOK)
		ts := got[`backupverify_backup_verified_timestamp_seconds{target="future"}`]
		if ts > float64(time.Now().Unix()+1) || ts < float64(time.Now().Unix()-60) {
			t.Errorf("verified timestamp %v, want about now (%d)", ts, time.Now().Unix())
		}
		if rpo := got[`backupverify_rpo_seconds{target="future"}`]; rpo < 0 || rpo > 60 {
			t.Errorf("rpo_seconds = %v, want 0..60", rpo)
		}
		if st := h.w.Status(); !st.LastResult.DatedInFuture {
			t.Error("result does not say the backup was dated in the future")
		}
	})
}

// setHeaderYear rewrites the year in a custom archive's header (archive
// version 1.14, 4-byte ints: the year is the sixth int after the compression int).
func setHeaderYear(t *testing.T, b []byte, year int) {
	t.Helper()
	if string(b[:5]) != "PGDMP" || b[8] != 4 {
		t.Fatalf("unexpected archive header % x", b[:16])
	}
	pos := 11
	if b[6] < 15 {
		pos += 5 // compression as an int
	} else {
		pos++
	}
	pos += 5 * 5 // sec, min, hour, mday, mon
	v := year - 1900
	b[pos] = 0
	b[pos+1], b[pos+2], b[pos+3], b[pos+4] = byte(v), byte(v>>8), 0, 0
}
