package s3source_test

import (
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/s3source"
)

func newTestClient(t testing.TB, endpoint string) *s3source.Client {
	t.Helper()
	c, err := s3source.NewClient(t.Context(), s3source.ClientOptions{
		Region: "us-east-1", Endpoint: endpoint, PathStyle: true, MaxAttempts: 2, ReadTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// listed is what List returned, one line per object.
func listed(t *testing.T, src *s3source.Source) []string {
	t.Helper()
	objs, err := src.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return lines(objs)
}

func lines(objs []verifier.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key+" "+strconv.FormatInt(o.Size, 10)+" "+o.ETag+" "+o.LastModified.Format(time.RFC3339Nano))
	}
	return out
}

// TestFastListMatchesSDK: a listing made without the SDK's middleware gives
// what the SDK's paginator gives, key for key, over several pages, with keys
// and a prefix that need escaping in the query and in XML, and it is the way
// the listing went.
func TestFastListMatchesSDK(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "fast")
	const prefix = "prod db/+x&y=1/"
	keys := []string{"a.dump", "2026/01/b c.dump", "ü/ñ.dump", "x+y=z&w.dump", "lt<gt>.dump", "pct%20.dump",
		`quote"'.dump`, "tab\tkey.dump", "n1", "n2", "n3", "n4"}
	for i, k := range keys {
		s3.Put(t, "fast", prefix+k, []byte(strings.Repeat("x", i)), testenv.PutOptions{})
	}
	s3.Put(t, "fast", "prod db/+x&y=10/outside.dump", []byte("no"), testenv.PutOptions{})
	s3.Put(t, "fast", "prod db/outside.dump", []byte("no"), testenv.PutOptions{})
	s3source.SetListMaxKeys(5) // three pages
	t.Cleanup(func() { s3source.SetListMaxKeys(0) })

	c := newTestClient(t, s3.Endpoint)
	src := c.Source("fast", prefix)
	got := listed(t, src)
	if n := s3source.FastLists(c); n != 1 {
		t.Fatalf("%d listings went the fast way, want 1", n)
	}
	objs, err := s3source.ListSDK(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	want := lines(objs)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || len(got) != len(keys) {
		t.Fatalf("fast listing:\n%s\nSDK listing:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestFastListFallsBackToSDK: a short page that fails (a garbled answer, a
// 503) is not an error: the SDK lists again and its answer stands.
//   - Three such failures in a row that the store does not recover from
//     turn the short way off for that source for an hour, with a warning; a
//     success in between resets the count.
//   - A 503 pauses the short way for every source of the client for a
//     minute, so an outage does not add a request to every poll.
func TestFastListFallsBackToSDK(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "fallback")
	s3.Put(t, "fallback", "db/a.dump", []byte("a"), testenv.PutOptions{})
	s3.Put(t, "fallback", "other/a.dump", []byte("a"), testenv.PutOptions{})
	var mode atomic.Int32 // 0 pass, 1 garble, 2 503
	var intercepted atomic.Int32
	s3.Proxy.SetHook(&testenv.Hook{Intercept: func(w http.ResponseWriter, r *http.Request) bool {
		// The SDK names each call; a short listing does not.
		if !r.URL.Query().Has("list-type") || r.Header.Get("Amz-Sdk-Invocation-Id") != "" || mode.Load() == 0 {
			return false
		}
		intercepted.Add(1)
		if mode.Load() == 2 {
			testenv.WriteSlowDown(w)
			return true
		}
		_, _ = io.WriteString(w, `<ListBucketResult><Contents><Key>forged.dump</Key><Size>x`)
		return true
	}})
	now := time.Now()
	s3source.SetClock(func() time.Time { return now })
	t.Cleanup(func() { s3source.SetClock(nil) })
	var logs strings.Builder
	c := newTestClient(t, s3.Endpoint)
	c.SetLog(slog.New(slog.NewTextHandler(&logs, nil)))
	src, other := c.Source("fallback", "db/"), c.Source("fallback", "other/")
	check := func(step string, s *s3source.Source, tried, fast int) {
		t.Helper()
		if got := listed(t, s); len(got) != 1 || !strings.HasPrefix(got[0], "a.dump 1 ") {
			t.Fatalf("%s: listed %q", step, got)
		}
		if n := intercepted.Load(); n != int32(tried) {
			t.Fatalf("%s: %d failing short listings so far, want %d", step, n, tried)
		}
		if n := s3source.FastLists(c); n != int64(fast) {
			t.Fatalf("%s: %d short listings so far, want %d", step, n, fast)
		}
	}
	mode.Store(1)
	check("garbled", src, 1, 0)
	check("garbled again", src, 2, 0)
	mode.Store(0)
	check("healthy", src, 2, 1)
	mode.Store(1)
	for i := range 3 {
		check("garbled "+strconv.Itoa(i), src, 3+i, 1)
	}
	if n := strings.Count(logs.String(), "S3 listings go through the AWS SDK for an hour"); n != 1 ||
		!strings.Contains(logs.String(), "source=s3://fallback/db/") || !strings.Contains(logs.String(), "last_error=") {
		t.Fatalf("%d warnings, log:\n%s", n, logs.String())
	}
	check("off for the hour", src, 5, 1)
	mode.Store(0)
	check("off for the hour, healthy store", src, 5, 1)
	check("another source of the client", other, 5, 2)
	now = now.Add(time.Hour + time.Second)
	check("an hour later", src, 5, 3)

	mode.Store(2)
	check("503", src, 6, 3)
	mode.Store(0)
	check("paused", src, 6, 3)
	check("paused, another source", other, 6, 3)
	now = now.Add(time.Minute + time.Second)
	check("a minute later", other, 6, 4)
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("a 503 warned; log:\n%s", logs.String())
	}
}

// TestFastListThroughCABundle: a store behind a private CA (AWS_CA_BUNDLE)
// is listed the short way, through the HTTP client the SDK configured.
func TestFastListThroughCABundle(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "tls")
	s3.Put(t, "tls", "db/a.dump", []byte("a"), testenv.PutOptions{})
	srv := httptest.NewTLSServer(s3.Proxy)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CA_BUNDLE", ca)
	c := newTestClient(t, srv.URL)
	for i := range 4 {
		if got := listed(t, c.Source("tls", "db/")); len(got) != 1 {
			t.Fatalf("listing %d: %q", i, got)
		}
	}
	if n := s3source.FastLists(c); n != 4 {
		t.Fatalf("%d of 4 listings went the short way", n)
	}
}

// TestFastListErrorsAreTheSDKs: a listing that fails fails with the SDK's
// error, as before there was a fast way.
func TestFastListErrorsAreTheSDKs(t *testing.T) {
	s3 := testenv.StartS3(t)
	c := newTestClient(t, s3.Endpoint)
	_, err := c.Source("no-such-bucket", "db/").List(t.Context())
	if err == nil || !strings.Contains(err.Error(), "NoSuchBucket") || !strings.HasPrefix(err.Error(), "list s3://no-such-bucket/db/: ") {
		t.Fatalf("err = %v", err)
	}
}

// TestFastListOnlyForPlainSigV4: the endpoint comes from the SDK's resolver
// (virtual-hosted or path style, FIPS, region), and buckets the SDK signs
// otherwise (S3 Express, Object Lambda and multi-region access points) never
// take the fast way.
func TestFastListOnlyForPlainSigV4(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	client := func(region string, pathStyle bool) *s3source.Client {
		c, err := s3source.NewClient(t.Context(), s3source.ClientOptions{Region: region, PathStyle: pathStyle})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		c      *s3source.Client
		bucket string
		want   string // "" when the listing must go through the SDK
	}{
		{client("eu-west-1", false), "backups", "https://backups.s3.eu-west-1.amazonaws.com/"},
		{client("eu-west-1", true), "backups", "https://s3.eu-west-1.amazonaws.com/backups"},
		{client("us-east-1", false), "my.dotted.bucket", "https://s3.us-east-1.amazonaws.com/my.dotted.bucket"},
		{client("us-east-1", false), "backups--use1-az4--x-s3", ""},
		{client("us-east-1", false), "arn:aws:s3-object-lambda:us-east-1:123456789012:accesspoint/ol", ""},
		{client("us-east-1", false), "arn:aws:s3::123456789012:accesspoint/mfzwi23gnjvgw.mrap", ""},
	} {
		got, ok := s3source.FastListURL(t.Context(), tc.c, tc.bucket, "db/")
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("%s: fast listing to %q (%v), want %q", tc.bucket, got, ok, tc.want)
		}
	}
}

// BenchmarkList: one listing of a prefix holding a backup and its manifest,
// through the SDK's paginator and the fast way, against versitygw directly.
// cpu-µs/op is this process's user+system CPU per listing (versitygw's own
// is not counted): what a poll costs the daemon.
func BenchmarkList(b *testing.B) {
	s3 := testenv.StartS3(b)
	s3.CreateBucket(b, "bench")
	s3.Put(b, "bench", "t0001/2026-01-01/backup.dump", []byte("dump"), testenv.PutOptions{})
	s3.Put(b, "bench", "t0001/2026-01-01/CHECKSUM", []byte("sum"), testenv.PutOptions{})
	c := newTestClient(b, s3.Direct)
	src := c.Source("bench", "t0001/")
	for _, way := range []string{"sdk", "fast"} {
		b.Run(way, func(b *testing.B) {
			list := func() error { _, err := src.List(b.Context()); return err }
			if way == "sdk" {
				list = func() error { _, err := s3source.ListSDK(b.Context(), src); return err }
			}
			if err := list(); err != nil {
				b.Fatal(err)
			}
			cpu0 := cpuNanos()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := list(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuNanos()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
		})
	}
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestFastListsNeverQueue: listings never wait for one another: 24
// listings at once are 24 requests at once.
func TestFastListsNeverQueue(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "queue")
	s3.Put(t, "queue", "db/a.dump", []byte("a"), testenv.PutOptions{})
	const n = 24
	var now, most atomic.Int32
	all := make(chan struct{})
	s3.Proxy.SetHook(&testenv.Hook{Intercept: func(w http.ResponseWriter, r *http.Request) bool {
		if !r.URL.Query().Has("list-type") {
			return false
		}
		cur := now.Add(1)
		defer now.Add(-1)
		for m := most.Load(); cur > m && !most.CompareAndSwap(m, cur); m = most.Load() {
		}
		if cur == n {
			close(all)
		}
		select { // hold each listing until all are in, or 5 s
		case <-all:
		case <-time.After(5 * time.Second):
		}
		return false
	}})
	c := newTestClient(t, s3.Endpoint)
	errs := make(chan error, n)
	for range n {
		go func() { _, err := c.Source("queue", "db/").List(t.Context()); errs <- err }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := most.Load(); m != n {
		t.Fatalf("at most %d listings at once, want %d", m, n)
	}
	if f := s3source.FastLists(c); f != n {
		t.Fatalf("%d fast listings, want %d", f, n)
	}
}

// TestListingsEnd: a store that repeats a continuation token, or truncates a
// page without one, fails the listing, the short way and the SDK's alike; it
// neither pages for ever nor passes part of a listing for the whole.
func TestListingsEnd(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "cycle")
	for _, tc := range []struct{ name, token, want string }{
		{"a cycle", "<NextContinuationToken>A</NextContinuationToken>", "continuation token twice"},
		{"no token", "", "truncated page without a continuation token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			s3.Proxy.SetHook(&testenv.Hook{Intercept: func(w http.ResponseWriter, r *http.Request) bool {
				if !r.URL.Query().Has("list-type") {
					return false
				}
				requests.Add(1)
				_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>cycle</Name><IsTruncated>true</IsTruncated>`+
					tc.token+`<Contents><Key>db/a.dump</Key><LastModified>2026-01-01T00:00:00Z</LastModified><ETag>"x"</ETag><Size>1</Size></Contents></ListBucketResult>`)
				return true
			}})
			c := newTestClient(t, s3.Endpoint)
			_, err := c.Source("cycle", "db/").List(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if n := requests.Load(); n > 4 {
				t.Fatalf("%d requests for a listing that cannot end", n)
			}
		})
	}
}
