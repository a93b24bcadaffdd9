package daemon

import (
	"bytes"
	"compress/gzip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

// TestVerifyLimits: a plain dump that inflates past verify.max_plain_size
// and a body that stalls past verify.timeout each fail, naming the limit.
func TestVerifyLimits(t *testing.T) {
	fx := makeFixtures(t)

	t.Run("plain dump inflating past max_plain_size", func(t *testing.T) {
		// A real dump's header and footer around one 64 MiB line: 64 KiB
		// gzipped, and complete by every marker.
		plain := string(fx.plain)
		i := strings.Index(plain, "-- PostgreSQL database dump complete")
		var body bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&body, gzip.BestCompression)
		zw.Write([]byte(plain[:i] + "-- "))
		zero := bytes.Repeat([]byte("A"), 1<<20)
		for range 64 {
			zw.Write(zero)
		}
		zw.Write([]byte("\n" + plain[i:]))
		zw.Close()
		if body.Len() > 1<<20 {
			t.Fatalf("the bomb is %d bytes gzipped", body.Len())
		}
		dir := t.TempDir()
		putBackup(t, filepath.Join(dir, "b"), "db.sql.gz", body.Bytes())
		cfg := func(extra string) string {
			return "state_dir: " + t.TempDir() + "\ntargets:\n  - name: bomb\n    source: file://" + dir + "/b/\n" + extra
		}
		// Without a limit below its size, the dump is read and passes: the
		// stream is read in constant memory.
		h := newHarness(t, cfg(""))
		h.scan()
		if r := h.w.Status().LastResult; r == nil || !r.OK {
			t.Fatalf("under the default limit: %+v", r)
		}
		h = newHarness(t, cfg("    verify: {max_plain_size: 8MiB}\n"))
		h.scan()
		h.expect("bomb", merge(zeroFailures("unreadable_archive", 1), map[string]float64{"backup_checksum_ok": 0}))
		if e := h.w.Status().LastResult.Error; !strings.Contains(e, "verify.max_plain_size (8388608 bytes)") {
			t.Errorf("error %q does not name verify.max_plain_size", e)
		}
	})

	t.Run("body stalling past verify.timeout", func(t *testing.T) {
		s := testenv.StartS3(t)
		s.CreateBucket(t, "backups")
		s.Put(t, "backups", "slow/db.dump", fx.custom, testenv.PutOptions{FullObjectSHA256: true})
		// The S3 client would wait a minute for the silent body; the
		// verification gives up at verify.timeout.
		yaml := strings.Replace(s3Target(s, "slow", "slow", "    verify: {timeout: 2s}\n"), "STATE", t.TempDir(), 1)
		yaml = strings.Replace(yaml, "read_timeout: 500ms", "read_timeout: 1m", 1)
		h := newHarness(t, yaml)
		s.Proxy.Stall("slow/db.dump", 4096, 1)
		start := time.Now()
		h.scan()
		s.Proxy.Stall("", 0, 0)
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("the scan took %s; verify.timeout is 2s", d)
		}
		h.expect("slow", merge(zeroFailures("download_error", 1), map[string]float64{"backup_download_failing": 1}))
		if e := h.w.Status().DownloadError; !strings.Contains(e, "verify.timeout (2s)") {
			t.Errorf("error %q does not name verify.timeout", e)
		}
	})
}
