package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Test credentials of the local S3 server; they reach the daemon through the
// AWS default chain (environment variables), as in production.
const (
	AccessKey = "backupverify-test"
	SecretKey = "backupverify-test-secret"
)

// S3 is a running versitygw with a fault-injecting proxy in front of it.
type S3 struct {
	Endpoint string // the proxy: what the daemon talks to
	Direct   string // versitygw itself
	Proxy    *FaultProxy
	Client   *s3.Client // talks to Direct, for fixtures
	Dir      string     // versitygw's folder: bucket/key are files below it
}

// StartS3 starts versitygw serving a temporary folder, and the proxy. It sets
// the AWS credential variables for the test.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := LookTool(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	dir := t.TempDir()
	port := FreePort(t)
	addr := "127.0.0.1:" + itoa(port)
	// --keep-alive: S3 keeps a client's connections open between requests; versitygw
	// closes each after one answer unless told otherwise.
	cmd := exec.Command(bin, "--port", addr, "--access", AccessKey, "--secret", SecretKey, "--keep-alive", "posix", dir)
	var logBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("versitygw log:\n%s", logBuf.String())
		}
	})
	WaitTCP(t, addr, 15*time.Second)
	target, _ := url.Parse("http://" + addr)
	fp := newFaultProxy(target)
	srv := httptest.NewServer(fp)
	t.Cleanup(srv.Close)
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": AccessKey, "AWS_SECRET_ACCESS_KEY": SecretKey,
		"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull} {
		t.Setenv(k, v)
	}
	client := s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String("http://" + addr),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	return &S3{Endpoint: srv.URL, Direct: "http://" + addr, Proxy: fp, Client: client, Dir: dir}
}

// CreateBucket makes a bucket.
func (s *S3) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	if _, err := s.Client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
}

// PutOptions say what is stored beside the bytes.
type PutOptions struct {
	FullObjectSHA256 bool   // send x-amz-checksum-sha256
	MetaSHA256       string // x-amz-meta-sha256
}

// Put uploads body to bucket/key.
func (s *S3) Put(t testing.TB, bucket, key string, body []byte, o PutOptions) {
	t.Helper()
	in := &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)}
	if o.FullObjectSHA256 {
		sum := sha256.Sum256(body)
		in.ChecksumAlgorithm = types.ChecksumAlgorithmSha256
		in.ChecksumSHA256 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
	}
	if o.MetaSHA256 != "" {
		in.Metadata = map[string]string{"sha256": o.MetaSHA256}
	}
	if _, err := s.Client.PutObject(context.Background(), in); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// PutFile uploads a local file.
func (s *S3) PutFile(t testing.TB, bucket, key, path string, o PutOptions) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Put(t, bucket, key, b, o)
	return b
}

// Delete removes an object.
func (s *S3) Delete(t testing.TB, bucket, key string) {
	t.Helper()
	if _, err := s.Client.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
}

// FaultProxy forwards to the S3 server, and on request answers 503s or
// stalls GET bodies midway, as overloaded or broken stores do.
type FaultProxy struct {
	rp *httputil.ReverseProxy

	fail503    atomic.Int32 // answer 503 to this many next requests
	stallGets  atomic.Int32 // stall this many next GETs of matching keys
	stallAfter atomic.Int64
	mu         sync.Mutex
	stallKey   string
	gets       map[string]int
	hook       atomic.Pointer[Hook] // see faults.go
	// object GETs being answered now, and the most at once
	getsNow, getsMost int
}

func newFaultProxy(target *url.URL) *FaultProxy {
	fp := &FaultProxy{gets: map[string]int{}}
	fp.rp = &httputil.ReverseProxy{
		// Out keeps the incoming Host header: it is part of the SigV4
		// signature. Only where the request goes changes.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			r := resp.Request
			if r.Method != http.MethodGet || r.URL.Query().Has("list-type") {
				return nil
			}
			if h := fp.hook.Load(); h != nil && h.Body != nil {
				resp.Body = h.Body(r, resp.Body)
			}
			fp.mu.Lock()
			match := fp.stallKey != "" && strings.HasSuffix(r.URL.Path, fp.stallKey)
			fp.mu.Unlock()
			if match && fp.stallGets.Load() > 0 && fp.stallGets.Add(-1) >= 0 {
				resp.Body = &stallingBody{r: resp.Body, left: fp.stallAfter.Load(), ctx: r.Context()}
			}
			return nil
		},
		ErrorLog: nil,
	}
	return fp
}

func (fp *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := fp.hook.Load(); h != nil && h.Intercept != nil && h.Intercept(w, r) {
		return
	}
	if fp.fail503.Load() > 0 && fp.fail503.Add(-1) >= 0 {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		return
	}
	if r.Method == http.MethodGet && !r.URL.Query().Has("list-type") {
		fp.mu.Lock()
		fp.gets[r.URL.Path]++
		fp.getsNow++
		fp.getsMost = max(fp.getsMost, fp.getsNow)
		fp.mu.Unlock()
		defer func() {
			fp.mu.Lock()
			fp.getsNow--
			fp.mu.Unlock()
		}()
	}
	fp.rp.ServeHTTP(w, r)
}

// MostGetsAtOnce is the most object GETs the proxy answered at once.
func (fp *FaultProxy) MostGetsAtOnce() int {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.getsMost
}

// Fail503 makes the next n requests answer 503 SlowDown.
func (fp *FaultProxy) Fail503(n int) { fp.fail503.Store(int32(n)) }

// Stall makes the next n GET bodies of keys ending in key stop sending after
// `after` bytes, until the client gives up.
func (fp *FaultProxy) Stall(key string, after int64, n int) {
	fp.mu.Lock()
	fp.stallKey = key
	fp.mu.Unlock()
	fp.stallAfter.Store(after)
	fp.stallGets.Store(int32(n))
}

// Gets returns how many object GETs were made of paths ending in suffix.
func (fp *FaultProxy) Gets(suffix string) int {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	n := 0
	for p, c := range fp.gets {
		if strings.HasSuffix(p, suffix) {
			n += c
		}
	}
	return n
}

// ResetGets forgets the GET counts.
func (fp *FaultProxy) ResetGets() {
	fp.mu.Lock()
	fp.gets = map[string]int{}
	fp.mu.Unlock()
}

type stallingBody struct {
	r    io.ReadCloser
	left int64
	ctx  context.Context
}

func (s *stallingBody) Read(p []byte) (int, error) {
	if s.left <= 0 {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	return n, err
}

func (s *stallingBody) Close() error { return s.r.Close() }

func itoa(i int) string { return strconv.Itoa(i) }
