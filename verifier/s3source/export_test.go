package s3source

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// FastLists is how many listings went out without the SDK's middleware.
func FastLists(c *Client) int64 { return c.fastLists.Load() }

// ListSDK lists through the SDK's paginator only.
func ListSDK(ctx context.Context, s *Source) ([]string, error) {
	var keys []string
	err := s.listSDK(ctx, func(key string, size int64, etag string, mod time.Time) {
		keys = append(keys, key+" "+strconv.FormatInt(size, 10)+" "+strings.Trim(etag, `"`)+" "+mod.UTC().Format(time.RFC3339Nano))
	})
	return keys, err
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
