package web

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// contentSecurityPolicy allows the pages nothing but their own inline style:
// no script, no frame, no form, no fetch, whatever a key or an error holds.
const contentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// secure sets the headers that keep a page from being framed, sniffed into
// another type, or made to run script.
func secure(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		h(w, r)
	}
}

// authLimiter rate-limits failed authentications per client address with a
// token bucket: burst failures at once, then one per every interval. A
// client whose bucket is empty gets 429 before its token is even compared,
// so guessing runs at that rate at most.
type authLimiter struct {
	burst    float64
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxClients bounds the limiter's memory; past it the oldest knowledge goes.
const maxClients = 4096

func newAuthLimiter(burst int, interval time.Duration, now func() time.Time) *authLimiter {
	return &authLimiter{burst: float64(burst), interval: interval, now: now, buckets: map[string]*bucket{}}
}

func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (l *authLimiter) refill(b *bucket, now time.Time) {
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()/l.interval.Seconds())
	b.at = now
}

// allow says whether the client may try a token now; if not, it also says
// after how long it may.
func (l *authLimiter) allow(client string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[client]
	if !ok {
		return true, 0
	}
	l.refill(b, l.now())
	if b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(l.interval))
}

// failed takes one token from the client's bucket.
func (l *authLimiter) failed(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[client]
	if !ok {
		if len(l.buckets) >= maxClients {
			for k, ob := range l.buckets {
				if l.refill(ob, now); ob.tokens >= l.burst {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxClients {
				l.buckets = map[string]*bucket{}
			}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[client] = b
	}
	l.refill(b, now)
	b.tokens = max(0, b.tokens-1)
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(d.Seconds()) + 1)
}
