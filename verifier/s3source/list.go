package s3source

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyauth "github.com/aws/smithy-go/auth"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/backupverify/backupverify/verifier"
)

// A poll is one ListObjectsV2 per target, a thousand a minute in a large
// daemon, and the SDK's middleware stack (about fifty steps, each a closure
// and a context value) made up most of a poll's CPU. So a listing goes out
// as one plain request the SDK's own parts build: the endpoint from its
// resolver (region, FIPS, dual-stack, path style), credentials from its
// cache, the signature from its SigV4 signer. Whatever is unusual falls back
// to the SDK's paginator, which also owns every failure:
//   - an endpoint that signs other than with SigV4 for "s3" (S3 Express,
//     Object Lambda, Outposts, multi-region access points) or anonymous
//     credentials never take this path;
//   - a page that fails in any way (transport, status, XML) makes the whole
//     listing again through the SDK, with its retries and its error messages;
//   - a source whose fast pages keep failing while the SDK's succeed stops
//     trying them.

// maxListBody bounds a ListObjectsV2 answer: 1,000 keys of 1,024 bytes with
// their sizes, dates and ETags fit in about 1.3 MB.
const maxListBody = 8 << 20

// fastMissLimit is how many listings in a row may fail the fast way and
// succeed through the SDK before a Source stops trying the fast way.
const fastMissLimit = 3

// listMaxKeys, when not 0, is the max-keys a fast listing asks for (tests).
var listMaxKeys int

// emptySHA256 is the hex sha256 of an empty payload.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// fastList is ListObjectsV2 of one bucket prefix as a plain signed GET.
type fastList struct {
	c      *Client
	path   string // endpoint path joined with the operation's "/"
	base   url.URL
	header http.Header // the endpoint's own headers
	region string      // the signing region

	mu     sync.Mutex
	misses int // listings in a row that failed here and not in the SDK
	off    bool
}

// newFastList resolves the bucket's endpoint as the SDK's ListObjectsV2
// would; nil where that endpoint is not plain SigV4 for "s3".
func newFastList(ctx context.Context, c *Client, bucket, prefix string) *fastList {
	o := c.client.Options()
	if o.EndpointResolverV2 == nil || c.creds == nil || c.http == nil || o.Region == "" {
		return nil
	}
	// The parameters the SDK binds for ListObjectsV2 (bindEndpointParams).
	p := s3.EndpointParameters{
		Bucket:                         aws.String(bucket),
		Prefix:                         aws.String(prefix),
		Region:                         aws.String(o.Region),
		UseFIPS:                        aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack:                   aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
		Endpoint:                       o.BaseEndpoint,
		ForcePathStyle:                 aws.Bool(o.UsePathStyle),
		Accelerate:                     aws.Bool(o.UseAccelerate),
		DisableMultiRegionAccessPoints: aws.Bool(o.DisableMultiRegionAccessPoints),
		UseArnRegion:                   aws.Bool(o.UseARNRegion),
		DisableS3ExpressSessionAuth:    o.DisableS3ExpressSessionAuth,
	}
	ep, err := o.EndpointResolverV2.ResolveEndpoint(ctx, p)
	if err != nil {
		return nil
	}
	auth, _ := smithyauth.GetAuthOptions(&ep.Properties)
	// The endpoint rules name schemes "sigv4", "sigv4a", "sigv4-s3express".
	if len(auth) != 1 || (auth[0].SchemeID != "sigv4" && auth[0].SchemeID != smithyauth.SchemeIDSigV4) {
		return nil
	}
	name, _ := smithyhttp.GetSigV4SigningName(&auth[0].SignerProperties)
	region, _ := smithyhttp.GetSigV4SigningRegion(&auth[0].SignerProperties)
	if name != "s3" || region == "" {
		return nil
	}
	f := &fastList{c: c, base: ep.URI, header: ep.Headers.Clone(), region: region}
	f.base.Path = smithyhttp.JoinPath(ep.URI.Path, "/")
	f.base.RawPath = ""
	return f
}

// enabled says whether a listing should try the fast way.
func (f *fastList) enabled() bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.off
}

// result records how a listing went: ok the fast way, or failed there and
// then succeeded through the SDK.
func (f *fastList) result(ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ok {
		f.misses = 0
		return
	}
	if f.misses++; f.misses >= fastMissLimit {
		f.off = true
	}
}

// list pages through the prefix; any error means "ask the SDK".
func (f *fastList) list(ctx context.Context, prefix string, add func(key string, size int64, etag string, mod time.Time)) error {
	token := ""
	for {
		page, err := f.page(ctx, prefix, token)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			mod, err := time.Parse(time.RFC3339Nano, o.LastModified)
			if err != nil {
				return fmt.Errorf("LastModified %q: %w", o.LastModified, err)
			}
			add(o.Key, o.Size, o.ETag, mod)
		}
		if !page.IsTruncated {
			return nil
		}
		if page.NextContinuationToken == "" || page.NextContinuationToken == token {
			return errors.New("truncated listing without a new continuation token")
		}
		token = page.NextContinuationToken
	}
}

// listPage is the part of a ListBucketResult a listing reads.
type listPage struct {
	XMLName               xml.Name `xml:"ListBucketResult"`
	IsTruncated           bool
	NextContinuationToken string
	Contents              []listObject
}

type listObject struct {
	Key          string
	LastModified string
	ETag         string
	Size         int64
}

func (f *fastList) page(ctx context.Context, prefix, token string) (*listPage, error) {
	u := f.base
	q := "list-type=2&prefix=" + queryEscape(prefix)
	if token != "" {
		q += "&continuation-token=" + queryEscape(token)
	}
	if listMaxKeys > 0 {
		q += fmt.Sprintf("&max-keys=%d", listMaxKeys)
	}
	u.RawQuery = q
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range f.header {
		req.Header[k] = v
	}
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	creds, err := f.c.creds.Retrieve(ctx)
	if err != nil {
		return nil, err
	}
	if creds.AccessKeyID == "" {
		return nil, errors.New("anonymous credentials")
	}
	if err := f.c.signer.SignHTTP(ctx, creds, req, emptySHA256, "s3", f.region, time.Now().UTC()); err != nil {
		return nil, err
	}
	resp, err := f.c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxListBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxListBody)
	}
	return parseListPage(body)
}

// queryEscape escapes a query value as SigV4 canonicalises it (a space is
// %20, never +), so the request carries what was signed.
func queryEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// listSDK pages through ListObjectsV2 with the SDK's paginator.
func (s *Source) listSDK(ctx context.Context, add func(key string, size int64, etag string, mod time.Time)) error {
	p := s3.NewListObjectsV2Paginator(s.c.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s: %w", s, describe(err))
		}
		for _, o := range page.Contents {
			add(aws.ToString(o.Key), aws.ToInt64(o.Size), aws.ToString(o.ETag), aws.ToTime(o.LastModified))
		}
	}
	return nil
}

// List lists the objects below the prefix: the fast way where it applies,
// else (or when it fails) through the SDK.
func (s *Source) List(ctx context.Context) ([]verifier.Object, error) {
	var out []verifier.Object
	add := func(key string, size int64, etag string, mod time.Time) {
		key = strings.TrimPrefix(key, s.prefix)
		if key == "" || strings.HasSuffix(key, "/") {
			return
		}
		out = append(out, verifier.Object{Key: key, Size: size, ETag: strings.Trim(etag, `"`), LastModified: mod.UTC()})
	}
	s.fastOnce.Do(func() { s.fast = newFastList(ctx, s.c, s.bucket, s.prefix) })
	if s.fast.enabled() {
		var err error
		s.c.workers.run(func() { err = s.fast.list(ctx, s.prefix, add) })
		if err == nil {
			s.fast.result(true)
			s.c.fastLists.Add(1)
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("list %s: %w", s, context.Cause(ctx))
		}
		out = out[:0]
		if err := s.listSDK(ctx, add); err != nil {
			return nil, err
		}
		s.fast.result(false)
		return out, nil
	}
	if err := s.listSDK(ctx, add); err != nil {
		return nil, err
	}
	return out, nil
}

// workers run listings on a few long-lived goroutines. A target's poll
// goroutine runs once a minute, and between its runs the garbage collector
// shrinks its stack, so each listing on it grew the stack again, copy by
// copy (a tenth of a poll's CPU at 1,000 targets). A worker busy every few
// seconds keeps its stack grown. When every worker is busy the caller lists
// itself, so the pool never queues a listing; an idle worker exits.
type workers struct {
	jobs chan func()
	mu   sync.Mutex
	n    int
}

const (
	maxListWorkers = 8
	workerIdle     = 2 * time.Minute
)

func (w *workers) run(fn func()) {
	done := make(chan struct{})
	job := func() { defer close(done); fn() }
	select {
	case w.jobs <- job:
		<-done
		return
	default:
	}
	w.mu.Lock()
	start := w.n < maxListWorkers
	if start {
		w.n++
	}
	w.mu.Unlock()
	if start {
		go w.work(job)
		<-done
		return
	}
	fn()
}

func (w *workers) work(job func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		job()
		idle.Reset(workerIdle)
		select {
		case job = <-w.jobs:
		case <-idle.C:
			w.mu.Lock()
			w.n--
			w.mu.Unlock()
			return
		}
	}
}
