package daemon

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// handler serves /metrics, /healthz and /readyz, and whatever routes adds
// (the status page and API of package web) on the same mux.
func (d *Daemon) handler(routes func(*http.ServeMux)) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
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
