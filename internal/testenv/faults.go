package testenv

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Hook alters what the fault proxy does, beyond its built-in 503s and
// stalls. Either function may be nil.
type Hook struct {
	// Intercept sees every request first; when it returns true it has
	// answered the request itself and nothing is forwarded.
	Intercept func(w http.ResponseWriter, r *http.Request) bool
	// Body wraps the body of each object GET's response (not listings).
	Body func(r *http.Request, body io.ReadCloser) io.ReadCloser
}

// SetHook installs h (nil removes it).
func (fp *FaultProxy) SetHook(h *Hook) { fp.hook.Store(h) }

// WriteSlowDown answers 503 SlowDown, as S3 does when throttling.
func WriteSlowDown(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
}

// Storm503 answers 503 SlowDown to every request whose path contains part,
// until the given time: a throttled prefix.
func Storm503(part string, until time.Time) *Hook {
	return &Hook{Intercept: func(w http.ResponseWriter, r *http.Request) bool {
		if time.Now().After(until) || !strings.Contains(r.URL.Path, part) {
			return false
		}
		WriteSlowDown(w)
		return true
	}}
}

// Truncate cuts the next n object bodies of keys ending in suffix after
// `after` bytes and breaks the connection, as a proxy or store that dies
// mid-response does. Truncated counts the bodies cut so far.
func Truncate(suffix string, after int64, n int) (h *Hook, truncated *atomic.Int32) {
	left := new(atomic.Int32)
	left.Store(int32(n))
	truncated = new(atomic.Int32)
	return &Hook{Body: func(r *http.Request, body io.ReadCloser) io.ReadCloser {
		if !strings.HasSuffix(r.URL.Path, suffix) || left.Add(-1) < 0 {
			return body
		}
		truncated.Add(1)
		return &cutBody{r: body, left: after}
	}}, truncated
}

type cutBody struct {
	r    io.ReadCloser
	left int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// Not io.EOF: the proxy gives up on the response, and the client
		// sees a connection closed before Content-Length bytes.
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }
