package s3source

import (
	"context"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// FastLists is how many listings went out without the SDK's middleware.
func FastLists(c *Client) int64 { return c.fastLists.Load() }

// ListSDK lists through the SDK's paginator only, as List keeps objects.
func ListSDK(ctx context.Context, s *Source) ([]verifier.Object, error) {
	var out []verifier.Object
	err := s.listSDK(ctx, s.collect(&out))
	return out, err
}

// SetListMaxKeys makes the fast listing ask for pages of n keys (0: the
// store's default), so tests page through a few objects.
func SetListMaxKeys(n int) { listMaxKeys = n }

// FastListURL is where a fast listing of bucket/prefix would go, and
// whether it would go the fast way at all.
func FastListURL(ctx context.Context, c *Client, bucket, prefix string) (string, bool) {
	f := newFastList(ctx, c, bucket, prefix)
	if f == nil {
		return "", false
	}
	return f.base.String(), true
}

// SetClock moves the time listings see; nil restores time.Now.
func SetClock(f func() time.Time) {
	if f == nil {
		f = time.Now
	}
	clock = f
}
