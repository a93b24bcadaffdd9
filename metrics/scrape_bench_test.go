package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// BenchmarkScrape: one /metrics scrape of 1,000 targets in the state of the
// golden fixture's "crm" (about 32 series each), through promhttp as the
// daemon serves it, with and without gzip (Prometheus asks for gzip).
func BenchmarkScrape(b *testing.B) {
	one := fixture()[0]
	var s snaps
	for i := range 1000 {
		st := one
		st.Target = fmt.Sprintf("t%04d", i)
		s = append(s, st)
	}
	reg := NewRegistry(s, func() time.Time { return t0 }, BuildInfo{Version: "bench"})
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	defer srv.Close()
	for _, enc := range []string{"gzip", "identity"} {
		b.Run(enc, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
				req.Header.Set("Accept-Encoding", enc)
				resp, err := http.DefaultTransport.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				b.ReportMetric(float64(n), "bytes")
			}
		})
	}
}
