// Package s3source is a verifier.Source over S3 and S3-compatible stores,
// through aws-sdk-go-v2. Of the daemon's packages it alone imports the AWS
// SDK; the tests' internal/testenv uses it too, to fill their S3 server.
package s3source

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/backupverify/backupverify/verifier"
)

// ClientOptions say where the store is and how patient to be with it.
type ClientOptions struct {
	Region    string
	Endpoint  string // "" for AWS; any S3-compatible store otherwise
	PathStyle bool
	// MaxAttempts bounds the tries of each request, and the resumptions of a
	// body that broke or stalled mid-read.
	MaxAttempts int
	// ReadTimeout is how long a response or a body may send nothing.
	ReadTimeout time.Duration
}

// Options say where the bucket is and how patient to be with it.
type Options struct {
	ClientOptions
	Bucket string
	Prefix string // "" or ending in /
}

// Client is one S3 client (credentials, HTTP transport and its connection
// pool) that any number of Sources share: the daemon builds one per store,
// not one per target.
type Client struct {
	opt    ClientOptions
	client *s3.Client
	// What a listing signs and sends itself with (list.go).
	creds  aws.CredentialsProvider
	http   aws.HTTPClient
	signer *v4.Signer
	// fastLists counts listings made without the SDK's middleware.
	fastLists atomic.Int64
	// fastPause is when (Unix ns) listings may try the short way again
	// after a failure the store may recover from.
	fastPause atomic.Int64
	log       *slog.Logger
}

// maxIdleConnsPerHost is how many idle connections a Client keeps to its
// store.
const maxIdleConnsPerHost = 64

// Source lists and reads the objects below a bucket prefix.
type Source struct {
	c      *Client
	bucket string
	prefix string

	fastOnce sync.Once
	fast     *fastList // nil where listings go through the SDK only
}

// New builds a client and a Source over it; a shortcut for one bucket prefix.
func New(ctx context.Context, opt Options) (*Source, error) {
	c, err := NewClient(ctx, opt.ClientOptions)
	if err != nil {
		return nil, err
	}
	return c.Source(opt.Bucket, opt.Prefix), nil
}

// NewClient builds a client from the AWS default credential chain
// (environment, shared files, IRSA web identity, instance role).
func NewClient(ctx context.Context, opt ClientOptions) (*Client, error) {
	if opt.MaxAttempts < 1 {
		opt.MaxAttempts = 5
	}
	if opt.ReadTimeout <= 0 {
		opt.ReadTimeout = time.Minute
	}
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.ResponseHeaderTimeout = opt.ReadTimeout
		// Every target of a store shares this pool, and polls and
		// verifications overlap: keep that many connections open, not the
		// SDK's 10, or each burst closes and re-dials the rest.
		tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
		tr.MaxIdleConns = 2 * maxIdleConnsPerHost
	})
	cfg, err := awsconfig.LoadDefaultConfig(ctx,
		awsconfig.WithRegion(opt.Region),
		awsconfig.WithHTTPClient(httpClient),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opt.MaxAttempts
				o.MaxBackoff = 10 * time.Second
			})
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = opt.PathStyle
		if opt.Endpoint != "" {
			o.BaseEndpoint = aws.String(opt.Endpoint)
		}
		// S3-compatible stores often reject or mangle the flexible
		// checksums the SDK sends by default; we verify sha256 ourselves.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	signer := v4.NewSigner(func(o *v4.SignerOptions) {
		// As the SDK signs for S3: the path is not escaped twice.
		o.DisableURIPathEscaping = true
	})
	// The options as the SDK resolved them: LoadDefaultConfig may have
	// replaced the HTTP client (a CA bundle, a defaults mode), and a listing
	// must go out through the same one.
	o := client.Options()
	return &Client{opt: opt, client: client, creds: o.Credentials, http: o.HTTPClient, signer: signer}, nil
}

// SetLog sets where the client warns of what an operator should know (a
// source whose listings go through the SDK for a while, list.go).
func (c *Client) SetLog(l *slog.Logger) { c.log = l }

// Source returns the objects below bucket/prefix (prefix "" or ending in /)
// through this client.
func (c *Client) Source(bucket, prefix string) *Source {
	return &Source{c: c, bucket: bucket, prefix: prefix}
}

// Client is the client the Source goes through.
func (s *Source) Client() *Client { return s.c }

func (s *Source) String() string { return "s3://" + s.bucket + "/" + s.prefix }

// Open streams an object. A body that breaks or sends nothing for
// ReadTimeout is resumed with a ranged GET of the same version (If-Match),
// at most MaxAttempts times.
func (s *Source) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	b := &body{ctx: ctx, s: s, key: s.prefix + key}
	if err := b.open(); err != nil {
		return nil, err
	}
	return b, nil
}

// OpenRange streams the bytes [off, end) of the object's version etag (the
// listing's) of size bytes: a GET with Range and If-Match, resumed as Open's.
// A version replaced since fails with the store's precondition error; an
// answer of another version or size (a store that ignores If-Match, or
// whose listing disagrees with the object) is an error too, never bytes of
// another object.
func (s *Source) OpenRange(ctx context.Context, key, etag string, off, end, size int64) (io.ReadCloser, error) {
	if off < 0 || end <= off || end > size || etag == "" {
		return nil, fmt.Errorf("get %s: bad range %d-%d of %d bytes, or no ETag", key, off, end, size)
	}
	b := &body{ctx: ctx, s: s, key: s.prefix + key, etag: etag, off: off, end: end, size: size}
	if err := b.open(); err != nil {
		return nil, err
	}
	return b, nil
}

// StoredChecksum asks for the object's full-object sha256 (checksum mode on),
// else its x-amz-meta-sha256. A composite (multipart) checksum is not a sha256
// of the bytes and is ignored.
func (s *Source) StoredChecksum(ctx context.Context, key string) (string, error) {
	out, err := s.c.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket:       aws.String(s.bucket),
		Key:          aws.String(s.prefix + key),
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		// A HEAD answer has no body, so a missing key is NotFound, not NoSuchKey.
		var nf *types.NotFound
		var nsk *types.NoSuchKey
		if errors.As(err, &nf) || errors.As(err, &nsk) {
			return "", fmt.Errorf("head %s: %w", key, verifier.ErrNotFound)
		}
		return "", fmt.Errorf("head %s: %w", key, describe(err))
	}
	if c := aws.ToString(out.ChecksumSHA256); c != "" && !strings.Contains(c, "-") && out.ChecksumType != types.ChecksumTypeComposite {
		if raw, err := base64.StdEncoding.DecodeString(c); err == nil && len(raw) == 32 {
			return hex.EncodeToString(raw), nil
		}
	}
	for k, v := range out.Metadata {
		if strings.EqualFold(k, "sha256") {
			v = strings.ToLower(strings.TrimSpace(v))
			if raw, err := hex.DecodeString(v); err == nil && len(raw) == 32 {
				return v, nil
			}
			if raw, err := base64.StdEncoding.DecodeString(v); err == nil && len(raw) == 32 {
				return hex.EncodeToString(raw), nil
			}
		}
	}
	return "", nil
}

// body is a GET body that resumes where it broke off.
type body struct {
	ctx      context.Context
	s        *Source
	key      string
	etag     string
	off      int64
	end      int64 // 0: to the end of the object; else the first byte not read
	size     int64 // with end: the object's size, which each answer must give
	attempts int

	mu      sync.Mutex
	cur     io.ReadCloser
	cancel  context.CancelFunc
	stalled bool
	timer   *time.Timer
}

func (b *body) open() error {
	in := &s3.GetObjectInput{Bucket: aws.String(b.s.bucket), Key: aws.String(b.key)}
	switch {
	case b.end > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", b.off, b.end-1))
		in.IfMatch = aws.String(`"` + b.etag + `"`)
	case b.off > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", b.off))
		in.IfMatch = aws.String(`"` + b.etag + `"`)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	out, err := b.s.c.client.GetObject(ctx, in)
	if err != nil {
		cancel()
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) {
			return fmt.Errorf("get %s: %w", b.key, verifier.ErrNotFound)
		}
		return fmt.Errorf("get %s at byte %d: %w", b.key, b.off, describe(err))
	}
	got := strings.Trim(aws.ToString(out.ETag), `"`)
	var bad error
	switch {
	case b.off == 0 && b.end == 0:
		b.etag = got
	case got != "" && got != b.etag:
		// A store that ignores If-Match: a resumed body or a part of the
		// version it holds now would be joined to the listed one's bytes.
		bad = fmt.Errorf("get %s at byte %d: the store sent version %s, not the listed %s (replaced while reading?)", b.key, b.off, got, b.etag)
	case b.end > 0:
		bad = b.checkPart(out)
	}
	if bad != nil {
		out.Body.Close()
		cancel()
		return bad
	}
	b.mu.Lock()
	b.cur, b.cancel, b.stalled = out.Body, cancel, false
	if b.timer == nil {
		b.timer = time.AfterFunc(time.Hour, b.onStall)
		b.timer.Stop()
	}
	b.mu.Unlock()
	return nil
}

// checkPart refuses a ranged answer (of the listed version: open checks its
// ETag) that is not the bytes asked for of the size asked for.
func (b *body) checkPart(out *s3.GetObjectOutput) error {
	cr := aws.ToString(out.ContentRange)
	want := fmt.Sprintf("bytes %d-%d/%d", b.off, b.end-1, b.size)
	switch n := out.ContentLength; {
	case n == nil && cr != want:
		// No length (a chunked answer): its range must say what it is.
		return fmt.Errorf("get %s bytes %d-%d: the store answered with no length and the range %q", b.key, b.off, b.end-1, cr)
	case n != nil && *n == b.size && *n != b.end-b.off && cr == "":
		return fmt.Errorf("get %s bytes %d-%d: %w", b.key, b.off, b.end-1, verifier.ErrRangeIgnored)
	case n != nil && *n != b.end-b.off:
		return fmt.Errorf("get %s bytes %d-%d: the store sent %d bytes, not %d", b.key, b.off, b.end-1, *n, b.end-b.off)
	}
	if cr != "" && cr != want {
		return fmt.Errorf("get %s: the store answered %q, not %q (replaced while reading?)", b.key, cr, want)
	}
	return nil
}

func (b *body) onStall() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stalled = true
	if b.cancel != nil {
		b.cancel()
	}
}

func (b *body) Read(p []byte) (int, error) {
	for {
		if b.end > 0 && b.off >= b.end {
			return 0, io.EOF // a range whose last read broke after its last byte
		}
		if b.cur == nil {
			if err := b.open(); err != nil {
				return 0, err
			}
		}
		b.timer.Reset(b.s.c.opt.ReadTimeout)
		n, err := b.cur.Read(p)
		b.timer.Stop()
		b.off += int64(n)
		if err == nil || err == io.EOF {
			return n, err
		}
		b.mu.Lock()
		stalled := b.stalled
		b.closeCurrent()
		b.mu.Unlock()
		if b.ctx.Err() != nil {
			return n, b.ctx.Err()
		}
		if stalled {
			err = fmt.Errorf("no data for %s (stalled)", b.s.c.opt.ReadTimeout)
		}
		b.attempts++
		if b.attempts >= b.s.c.opt.MaxAttempts {
			return n, fmt.Errorf("get %s: gave up after %d attempts at byte %d: %w", b.key, b.attempts, b.off, err)
		}
		if n > 0 {
			return n, nil
		}
		select {
		case <-time.After(time.Duration(b.attempts) * 200 * time.Millisecond):
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
}

func (b *body) closeCurrent() {
	if b.cur != nil {
		b.cur.Close()
		b.cur = nil
	}
	if b.cancel != nil {
		b.cancel()
		b.cancel = nil
	}
}

func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
	}
	b.closeCurrent()
	return nil
}

// describe shortens SDK errors to what an operator needs: the API error code
// and message, a listing's answer refused (listbound.go), or the transport
// error.
func describe(err error) error {
	var le *listAnswerError
	if errors.As(err, &le) {
		return le
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return fmt.Errorf("%s: %s", ae.ErrorCode(), ae.ErrorMessage())
	}
	return err
}

// Upload puts body at the source's prefix + key (report copies for audit
// retention off the host).
func (s *Source) Upload(ctx context.Context, key string, body []byte) error {
	_, err := s.c.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.prefix + key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String(contentType(key)),
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", s.prefix+key, describe(err))
	}
	return nil
}

func contentType(key string) string {
	switch {
	case strings.HasSuffix(key, ".json"):
		return "application/json"
	case strings.HasSuffix(key, ".md"):
		return "text/markdown; charset=utf-8"
	}
	return "application/octet-stream"
}
