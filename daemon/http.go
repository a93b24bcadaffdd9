package daemon

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newHTTPServer bounds what one client can hold: a request must arrive
// within 30s (its headers within 10s, at most 64 KiB of them), an answer is
// written within 1m, and an idle keep-alive connection is closed after 2m.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// handler serves /metrics, /healthz and /readyz, and whatever routes adds
// (the status page and API of package web) on the same mux.
func (d *Daemon) handler(routes func(*http.ServeMux)) http.Handler {
	mux := http.NewServeMux()
	// A failed Gather answers 500 with every series lost (the daemon
	// shows as down): never ContinueOnError, which would serve what Gather
	// refused; the log says why.
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg,
		ErrorLog: scrapeLog{d.log}, ErrorHandling: promhttp.HTTPErrorOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if routes != nil {
		routes(mux)
	}
	return mux
}

// scrapeLog logs promhttp's errors: a failed Gather or a failed write.
type scrapeLog struct{ log *slog.Logger }

func (l scrapeLog) Println(v ...any) {
	l.log.Error("metrics scrape failed", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}
