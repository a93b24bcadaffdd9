package s3source_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	s3api "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/s3source"
)

func randomObject(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestOpenRange: a range of the listed version is read whole, also when its
// body breaks mid-way (resumed from where it broke, up to the range's end);
// a version replaced since the listing is refused.
func TestOpenRange(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "ranges")
	obj := randomObject(3 << 20)
	s3.Put(t, "ranges", "db/a.dump", obj, testenv.PutOptions{})
	src := newTestClient(t, s3.Endpoint).Source("ranges", "db/")
	objs, err := src.List(t.Context())
	if err != nil || len(objs) != 1 {
		t.Fatalf("%v %v", objs, err)
	}
	etag := objs[0].ETag
	size := int64(len(obj))
	read := func(off, end int64) ([]byte, error) {
		body, err := src.OpenRange(t.Context(), "a.dump", etag, off, end, size)
		if err != nil {
			return nil, err
		}
		defer body.Close()
		return io.ReadAll(body)
	}
	got, err := read(1<<20+5, 2<<20+11)
	if err != nil || !bytes.Equal(got, obj[1<<20+5:2<<20+11]) {
		t.Fatalf("range: %d bytes, %v", len(got), err)
	}
	// The body breaks once after 100 KiB: the rest of the range is asked for.
	h, cut := testenv.Truncate("a.dump", 100<<10, 1)
	s3.Proxy.SetHook(h)
	got, err = read(1<<20, 2<<20)
	s3.Proxy.SetHook(nil)
	if err != nil || !bytes.Equal(got, obj[1<<20:2<<20]) || cut.Load() != 1 {
		t.Fatalf("range broken once: %d bytes, %v, %d cut", len(got), err, cut.Load())
	}
	if _, err := src.OpenRange(t.Context(), "a.dump", etag, 0, 1<<20, size+1); err == nil || !strings.Contains(err.Error(), "not \"bytes 0-1048575/3145729\"") {
		t.Fatalf("a listing one byte longer than the object: %v, want the answer's size refused", err)
	}
	// A store that ignores If-Match and answers another version, or the
	// right one with another size: refused, never stitched into the copy.
	for _, c := range []struct{ etag, total, want string }{
		{`"another"`, "3145728", "not the listed"},
		{`"` + etag + `"`, "3145730", "replaced while reading"},
	} {
		s3.Proxy.SetHook(&testenv.Hook{Intercept: func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("ETag", c.etag)
			w.Header().Set("Content-Range", "bytes 0-9/"+c.total)
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(obj[:10])
			return true
		}})
		_, err := read(0, 10)
		s3.Proxy.SetHook(nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("answer %s of %s bytes: %v, want an error naming %q", c.etag, c.total, err, c.want)
		}
	}
	// A store that ignores Range and sends the whole object is told apart,
	// for the drill to read it with one GET; a chunked answer (no length)
	// is taken when its Content-Range is the one asked for, and refused
	// without one.
	for _, c := range []struct {
		name, status, rng string
		body              []byte
		chunked           bool
		ignored           bool
		err               string
	}{
		{name: "whole object", body: obj, ignored: true},
		{name: "chunked, with its range", body: obj[:10], rng: fmt.Sprintf("bytes 0-9/%d", size), chunked: true},
		{name: "chunked, no range", body: obj[:10], chunked: true, err: "no length"},
	} {
		s3.Proxy.SetHook(&testenv.Hook{Intercept: func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("ETag", `"`+etag+`"`)
			code := http.StatusOK
			if c.rng != "" {
				w.Header().Set("Content-Range", c.rng)
				code = http.StatusPartialContent
			}
			if !c.chunked {
				w.Header().Set("Content-Length", fmt.Sprint(len(c.body)))
			}
			w.WriteHeader(code)
			if c.chunked {
				w.(http.Flusher).Flush()
			}
			_, _ = w.Write(c.body)
			return true
		}})
		got, err := read(0, 10)
		s3.Proxy.SetHook(nil)
		switch {
		case c.ignored:
			if !errors.Is(err, verifier.ErrRangeIgnored) {
				t.Errorf("%s: %v, want ErrRangeIgnored", c.name, err)
			}
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want an error naming %q", c.name, err, c.err)
			}
		case err != nil || !bytes.Equal(got, obj[:10]):
			t.Errorf("%s: %d bytes, %v", c.name, len(got), err)
		}
	}
	s3.Put(t, "ranges", "db/a.dump", randomObject(3<<20+1), testenv.PutOptions{})
	if _, err := read(0, 1<<20); err == nil || !strings.Contains(err.Error(), "Precondition") {
		t.Fatalf("a replaced version: %v, want the store's precondition error", err)
	}
}

// TestResumeStoreIgnoresIfMatch: a body that breaks is resumed with If-Match
// on its version; a store that ignores it, after the object was replaced,
// sends the rest of the new version, which is refused rather than appended
// to the old one's start (a false sha256 mismatch, where the object was only
// replaced while reading).
func TestResumeStoreIgnoresIfMatch(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "ranges")
	s3.Put(t, "ranges", "db/a.dump", randomObject(3<<20), testenv.PutOptions{})
	src := newTestClient(t, s3.Endpoint).Source("ranges", "db/")
	replaced := randomObject(3 << 20)
	replaced[0] ^= 1 // the same size, another ETag
	h, cut := testenv.Truncate("a.dump", 100<<10, 1)
	h.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "a.dump") || r.Header.Get("If-Match") == "" {
			return false
		}
		// The object is replaced before the resumption, which is answered
		// as if If-Match were not there.
		s3.Put(t, "ranges", "db/a.dump", replaced, testenv.PutOptions{})
		out, err := s3.Client.GetObject(r.Context(), &s3api.GetObjectInput{Bucket: aws.String("ranges"),
			Key: aws.String("db/a.dump"), Range: aws.String(r.Header.Get("Range"))})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return true
		}
		defer out.Body.Close()
		w.Header().Set("ETag", aws.ToString(out.ETag))
		w.Header().Set("Content-Range", aws.ToString(out.ContentRange))
		w.Header().Set("Content-Length", fmt.Sprint(aws.ToInt64(out.ContentLength)))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = io.Copy(w, out.Body)
		return true
	}
	s3.Proxy.SetHook(h)
	body, err := src.Open(t.Context(), "a.dump")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	got, err := io.ReadAll(body)
	if cut.Load() != 1 {
		t.Fatalf("%d bodies cut, want 1", cut.Load())
	}
	if err == nil || !strings.Contains(err.Error(), "replaced while reading") {
		t.Fatalf("read %d bytes, %v; want the resumption of another version refused", len(got), err)
	}
}

// TestOpenRangeMultipartETag: an object uploaded in parts has an ETag with
// "-N", which If-Match takes as it is.
func TestOpenRangeMultipartETag(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "ranges")
	obj := randomObject(6<<20 + 123)
	ctx := t.Context()
	up, err := s3.Client.CreateMultipartUpload(ctx, &s3api.CreateMultipartUploadInput{Bucket: aws.String("ranges"), Key: aws.String("db/a.dump")})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	for i, p := range [][]byte{obj[:5<<20], obj[5<<20:]} {
		out, err := s3.Client.UploadPart(ctx, &s3api.UploadPartInput{Bucket: aws.String("ranges"), Key: aws.String("db/a.dump"),
			UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	if _, err := s3.Client.CompleteMultipartUpload(ctx, &s3api.CompleteMultipartUploadInput{Bucket: aws.String("ranges"),
		Key: aws.String("db/a.dump"), UploadId: up.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatal(err)
	}
	src := newTestClient(t, s3.Endpoint).Source("ranges", "db/")
	objs, err := src.List(ctx)
	if err != nil || len(objs) != 1 || !strings.HasSuffix(objs[0].ETag, "-2") {
		t.Fatalf("%v %v; want one object with a multipart ETag", objs, err)
	}
	body, err := src.OpenRange(ctx, "a.dump", objs[0].ETag, 5<<20-7, int64(len(obj)), int64(len(obj)))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if got, err := io.ReadAll(body); err != nil || !bytes.Equal(got, obj[5<<20-7:]) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
}

// TestDrillDownloadInParts: a drill's copy of a large backup (40 MiB: five
// parts of 8 MiB) comes from versitygw in ranged GETs at once, and is the
// object byte for byte, with its sum.
func TestDrillDownloadInParts(t *testing.T) {
	s3, src, b, obj := largeBackup(t, 40<<20)
	path := filepath.Join(t.TempDir(), "backup.dump")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s3.Proxy.ResetGets()
	r, err := verifier.VerifyTo(t.Context(), src, nil, b, nil, time.Now, verifier.CopyOptions{To: f, HeaderOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(obj)
	if r.Reason == verifier.ReasonDownloadError || r.SHA256 != hex.EncodeToString(sum[:]) || r.BytesRead != int64(len(obj)) {
		t.Fatalf("reason %q (%s), %d bytes, sha256 %s", r.Reason, r.Error, r.BytesRead, r.SHA256)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, obj) {
		t.Fatalf("the copy: %d bytes, %v", len(got), err)
	}
	if n, most := s3.Proxy.Gets("backup.dump"), s3.Proxy.MostGetsAtOnce(); n != 5 || most < 2 {
		t.Errorf("%d GETs of the backup, at most %d at once; want its 5 parts, several at once", n, most)
	}
}

// BenchmarkDrillDownload: a drill's download of a 256 MiB backup from
// versitygw, each GET's body held to 64 MB/s by the proxy (as S3 serves one
// connection a fraction of what it serves several) and not held, in one GET
// and in parts. It reports MB/s of the whole download.
func BenchmarkDrillDownload(b *testing.B) {
	s3, src, bk, obj := largeBackup(b, 256<<20)
	for _, c := range []struct {
		name string
		rate float64 // bytes a second of each GET's body; 0: as fast as it comes
	}{{"unlimited", 0}, {"64MBps", 64e6}} {
		s3.Proxy.SetHook(nil)
		if c.rate > 0 {
			s3.Proxy.SetHook(&testenv.Hook{Body: func(_ *http.Request, body io.ReadCloser) io.ReadCloser {
				return &throttled{r: body, rate: c.rate, start: time.Now()}
			}})
		}
		for _, way := range []string{"one-get", "parts"} {
			b.Run(c.name+"/"+way, func(b *testing.B) { download(b, src, bk, len(obj), way) })
		}
	}
}

func download(b *testing.B, src verifier.Source, bk verifier.Backup, size int, way string) {
	b.SetBytes(int64(size))
	for range b.N {
		f, err := os.Create(filepath.Join(b.TempDir(), "backup.dump"))
		if err != nil {
			b.Fatal(err)
		}
		var to io.Writer = f
		if way == "one-get" {
			to = struct{ io.Writer }{f} // not a file: one GET
		}
		r, err := verifier.VerifyTo(b.Context(), src, nil, bk, nil, time.Now, verifier.CopyOptions{To: to, HeaderOnly: true})
		f.Close()
		if err != nil || r.Reason == verifier.ReasonDownloadError {
			b.Fatalf("%v %s", err, r.Error)
		}
	}
}

// throttled holds a body to rate bytes a second.
type throttled struct {
	r     io.ReadCloser
	rate  float64
	start time.Time
	n     int64
}

func (t *throttled) Read(p []byte) (int, error) {
	n, err := t.r.Read(p[:min(len(p), 64<<10)])
	t.n += int64(n)
	if ahead := time.Duration(float64(t.n)/t.rate*float64(time.Second)) - time.Since(t.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return n, err
}

func (t *throttled) Close() error { return t.r.Close() }

// largeBackup puts a backup of size random bytes (after "PGDMP"), its
// full-object sha256 stored with it, on a new versitygw, and returns it as
// listed.
func largeBackup(tb testing.TB, size int) (*testenv.S3, *s3source.Source, verifier.Backup, []byte) {
	tb.Helper()
	s3 := testenv.StartS3(tb)
	s3.CreateBucket(tb, "parts")
	obj := append([]byte("PGDMP"), randomObject(size-5)...)
	s3.Put(tb, "parts", "db/2026-01-01/backup.dump", obj, testenv.PutOptions{FullObjectSHA256: true})
	src := newTestClient(tb, s3.Endpoint).Source("parts", "db/")
	objs, err := src.List(tb.Context())
	if err != nil || len(objs) != 1 {
		tb.Fatalf("%v %v", objs, err)
	}
	return s3, src, verifier.Backup{Object: objs[0], ChecksumKind: verifier.ChecksumS3}, obj
}
