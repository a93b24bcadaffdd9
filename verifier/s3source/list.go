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
	"github.com/prometheus/common/version"

	"github.com/backupverify/backupverify/verifier"
)

// A poll is one ListObjectsV2 per target, a thousand a minute in a large
// daemon, and the SDK's middleware stack (about fifty steps, each a closure
// and a context value) was half of the daemon's CPU profile at 1,000
// targets. So a listing goes out
// as one plain request the SDK's own parts build: the endpoint from its
// resolver (region, FIPS, dual-stack, path style), the HTTP client it was
// configured with (CA bundle, proxy, timeouts), credentials from its cache,
// the signature from its SigV4 signer. Whatever is unusual falls back to the
// SDK's paginator, which also owns every failure:
//   - an endpoint that signs other than with SigV4 for "s3" (S3 Express,
//     Object Lambda, Outposts, multi-region access points) never takes this
//     path, nor do anonymous credentials after the first listing;
//   - a page that fails in any way (transport, status, XML) makes the whole
//     listing again through the SDK, with its retries and its error messages;
//   - a failure a store may recover from (a transport error, 429, 5xx,
//     credentials not to be had yet) pauses the short way for every target
//     of the client for a minute, so an outage adds about one request a
//     minute, not one a poll;
//   - a source whose short listings keep failing otherwise while the SDK's
//     succeed (a store that reads our request differently, a clock the SDK
//     corrects for) stops trying for an hour, with a warning in the log.

// maxListBody bounds a ListObjectsV2 answer, direct or through the SDK
// (listbound.go): 1,000 keys of 1,024 bytes with their sizes, dates and
// ETags fit in about 1.3 MB, in under 7 MB with every character of the
// keys escaped as &quot;.
const maxListBody = 8 << 20

// fastMissLimit is how many listings in a row may fail the short way and
// succeed through the SDK before a Source stops trying the short way for
// fastOffFor; fastPauseFor is how long a failure a store may recover from
// pauses the short way for the whole client.
const (
	fastMissLimit = 3
	fastOffFor    = time.Hour
	fastPauseFor  = time.Minute
)

// listMaxKeys, when not 0, is the max-keys a fast listing asks for (tests).
var listMaxKeys int

// userAgent names the daemon in the store's access logs, as the SDK's
// requests name the SDK.
var userAgent = "backupverify/" + version.Version + " (listing)"

// clock is when a listing runs (tests move it).
var clock = time.Now

// emptySHA256 is the hex sha256 of an empty payload.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// fastList is ListObjectsV2 of one bucket prefix as a plain signed GET.
type fastList struct {
	c      *Client
	base   url.URL
	header http.Header // the endpoint's own headers
	region string      // the signing region

	mu       sync.Mutex
	misses   int       // listings in a row that failed here and not in the SDK
	offUntil time.Time // the short way is not tried before then
}

// fastError is why a short listing failed; retry says a store may recover
// from it (a transport error, 429, 5xx).
type fastError struct {
	err   error
	retry bool
}

func (e *fastError) Error() string { return e.err.Error() }

// errAnonymous: the credentials are anonymous, and the SDK sends such
// requests unsigned.
var errAnonymous = errors.New("anonymous credentials")

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

// enabled says whether a listing should try the short way now.
func (f *fastList) enabled(now time.Time) bool {
	if f == nil || now.UnixNano() < f.c.fastPause.Load() {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !now.Before(f.offUntil)
}

// failed records a short listing that failed with err, after which the SDK
// listed with sdkErr.
func (f *fastList) failed(s *Source, err error, sdkErr error, now time.Time) {
	if errors.Is(err, errAnonymous) {
		f.mu.Lock()
		f.offUntil = time.Unix(1<<62, 0) // unsigned requests are the SDK's to make
		f.mu.Unlock()
		return
	}
	var fe *fastError
	if errors.As(err, &fe) && fe.retry {
		f.c.fastPause.Store(now.Add(fastPauseFor).UnixNano())
		return
	}
	if sdkErr != nil {
		return // the store fails both ways: nothing to learn about ours
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.misses++; f.misses < fastMissLimit {
		return
	}
	f.misses = 0
	f.offUntil = now.Add(fastOffFor)
	if f.c.log != nil {
		f.c.log.Warn("S3 listings go through the AWS SDK for an hour: the direct request kept failing where the SDK's succeeded",
			"source", s.String(), "failures", fastMissLimit, "last_error", err.Error())
	}
}

// ok records a short listing that succeeded.
func (f *fastList) ok() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.misses = 0
}

// list pages through the prefix; any error means "ask the SDK".
func (f *fastList) list(ctx context.Context, prefix string, add func(key string, size int64, etag string, mod time.Time)) error {
	token := ""
	var pages pageGuard
	for {
		page, err := f.page(ctx, prefix, token)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			mod, err := time.Parse(time.RFC3339Nano, o.LastModified)
			if err != nil {
				return fmt.Errorf("bad LastModified %q: %w", o.LastModified, err)
			}
			add(o.Key, o.Size, o.ETag, mod)
		}
		if !page.IsTruncated {
			return nil
		}
		if err := pages.next(page.NextContinuationToken); err != nil {
			return err
		}
		token = page.NextContinuationToken
	}
}

// maxListPages bounds one listing: ten million keys at S3's 1,000 a page.
const maxListPages = 10_000

// pageGuard stops a listing whose store repeats a continuation token (a
// cycle would page for ever), gives none for a truncated page, or pages
// past maxListPages.
type pageGuard struct {
	seen map[string]bool
	n    int
}

func (g *pageGuard) next(token string) error {
	if token == "" {
		return errors.New("the store sent a truncated page without a continuation token")
	}
	if g.seen[token] {
		return errors.New("the store sent a continuation token twice: the listing would not end")
	}
	if g.n++; g.n >= maxListPages {
		return fmt.Errorf("more than %d pages: the listing would not end", maxListPages)
	}
	if g.seen == nil {
		g.seen = map[string]bool{}
	}
	g.seen[token] = true
	return nil
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
	req.Header.Set("User-Agent", userAgent)
	creds, err := f.c.creds.Retrieve(ctx)
	if err != nil {
		// Credentials may come later (a token file not yet mounted).
		return nil, &fastError{err: fmt.Errorf("credentials: %w", err), retry: true}
	}
	if creds.AccessKeyID == "" {
		return nil, errAnonymous
	}
	if err := f.c.signer.SignHTTP(ctx, creds, req, emptySHA256, "s3", f.region, time.Now().UTC()); err != nil {
		return nil, err
	}
	resp, err := f.c.http.Do(req)
	if err != nil {
		return nil, &fastError{err: err, retry: true}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, &fastError{err: fmt.Errorf("status %s", resp.Status),
			retry: resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBody+1))
	if err != nil {
		return nil, &fastError{err: err, retry: true}
	}
	if len(body) > maxListBody {
		return nil, errListTooLarge
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
	var pages pageGuard
	for p.HasMorePages() {
		page, err := p.NextPage(ctx, boundListing)
		if err != nil {
			return fmt.Errorf("list %s: %w", s, describe(err))
		}
		for _, o := range page.Contents {
			add(aws.ToString(o.Key), aws.ToInt64(o.Size), aws.ToString(o.ETag), aws.ToTime(o.LastModified))
		}
		// The paginator stops at a truncated page without a token, passing
		// a partial listing for a whole one, and follows a cycle for ever.
		if aws.ToBool(page.IsTruncated) {
			if err := pages.next(aws.ToString(page.NextContinuationToken)); err != nil {
				return fmt.Errorf("list %s: %w", s, err)
			}
		}
	}
	return nil
}

// collect returns what a listing calls for each object: it appends to out
// the object's key below the prefix, leaving out folder markers.
func (s *Source) collect(out *[]verifier.Object) func(key string, size int64, etag string, mod time.Time) {
	return func(key string, size int64, etag string, mod time.Time) {
		key = strings.TrimPrefix(key, s.prefix)
		if key == "" || strings.HasSuffix(key, "/") {
			return
		}
		*out = append(*out, verifier.Object{Key: key, Size: size, ETag: strings.Trim(etag, `"`), LastModified: mod.UTC()})
	}
}

// List lists the objects below the prefix: the fast way where it applies,
// else (or when it fails) through the SDK.
func (s *Source) List(ctx context.Context) ([]verifier.Object, error) {
	var out []verifier.Object
	add := s.collect(&out)
	s.fastOnce.Do(func() { s.fast = newFastList(ctx, s.c, s.bucket, s.prefix) })
	if s.fast.enabled(clock()) {
		err := s.fast.list(ctx, s.prefix, add)
		if err == nil {
			s.fast.ok()
			s.c.fastLists.Add(1)
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("list %s: %w", s, context.Cause(ctx))
		}
		out = out[:0]
		sdkErr := s.listSDK(ctx, add)
		s.fast.failed(s, err, sdkErr, clock())
		if sdkErr != nil {
			return nil, sdkErr
		}
		return out, nil
	}
	if err := s.listSDK(ctx, add); err != nil {
		return nil, err
	}
	return out, nil
}
