// Package web serves what people read and do over HTTP: the status page, its
// JSON API, the stored drill reports and the drill trigger. It reads the
// daemon through the small Daemon interface and never imports package daemon.
package web

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/backupverify/backupverify/report"
	"github.com/backupverify/backupverify/verifier"
)

// Daemon is what the pages and the API need from the running daemon.
type Daemon interface {
	// Statuses returns every target's status, in target name order.
	Statuses() []verifier.Status
	// RunDrill starts a drill of the named target now; scheduler.ErrUnknown
	// if there is no such target, scheduler.ErrRunning if one is running or
	// queued, another error if drills cannot start at all.
	RunDrill(target, trigger string) error
	// Reports returns where drill reports are kept, or nil if not known yet.
	Reports() *report.Store
	// TriggerToken returns the bearer token the drill trigger requires;
	// empty leaves the API read-only.
	TriggerToken() string
}

// Server serves the pages and the API over a Daemon.
type Server struct {
	d    Daemon
	log  *slog.Logger
	now  func() time.Time
	auth *authLimiter
}

// New returns a Server over d; now is the clock the pages show ages by.
func New(d Daemon, log *slog.Logger, now func() time.Time) *Server {
	if now == nil {
		now = time.Now
	}
	return &Server{d: d, log: log, now: now, auth: newAuthLimiter(authBurst, authInterval, now)}
}

// Failed trigger authentications: authBurst at once, then one per authInterval.
const (
	authBurst    = 5
	authInterval = time.Minute
)

// Register adds the status page, the API and the report routes to mux,
// each answering with the headers of secure.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/status", secure(s.serveStatusJSON))
	mux.HandleFunc("POST /api/v1/targets/{name}/drill", secure(s.serveTriggerDrill))
	mux.HandleFunc("GET /reports/{target}/{$}", secure(s.serveReports))
	mux.HandleFunc("GET /reports/{target}/{file}", secure(s.serveReports))
	mux.HandleFunc("GET /{$}", secure(s.serveStatusPage))
}
