package daemon

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/backupverify/backupverify/scheduler"
	"github.com/backupverify/backupverify/verifier"
)

// Handler serves /metrics, /healthz, /readyz, the status page and its JSON.
func (d *Daemon) Handler() http.Handler {
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
	mux.HandleFunc("GET /api/v1/status", d.serveStatusJSON)
	mux.HandleFunc("POST /api/v1/targets/{name}/drill", d.serveTriggerDrill)
	mux.HandleFunc("GET /{$}", d.serveStatusPage)
	return mux
}

// TargetView is one target as the status page and API show it.
type TargetView struct {
	Target          string           `json:"target"`
	Source          string           `json:"source"`
	NewestKey       string           `json:"newest_key,omitempty"`
	NewestCreated   *time.Time       `json:"newest_created,omitempty"`
	NewestSize      int64            `json:"newest_size_bytes"`
	ChecksumOK      bool             `json:"checksum_ok"`
	LastResult      *verifier.Result `json:"last_result,omitempty"`
	VerifiedCreated *time.Time       `json:"verified_created,omitempty"`
	RPOSeconds      *float64         `json:"rpo_seconds"` // null: never verified
	RPOTarget       float64          `json:"rpo_target_seconds"`
	RPOOK           bool             `json:"rpo_ok"`
	Missed          bool             `json:"backup_missed"`
	NextBackupDue   *time.Time       `json:"next_backup_due,omitempty"`
	ScanLastOK      *time.Time       `json:"scan_last_success,omitempty"`
	ScanLastError   string           `json:"scan_last_error,omitempty"`
	Catalogued      int              `json:"catalogued_backups"`
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (d *Daemon) views() []TargetView {
	now := d.opt.Now()
	var out []TargetView
	for _, s := range d.Statuses() {
		v := TargetView{Target: s.Target, Source: s.Source, RPOTarget: s.RPOTarget.Seconds(),
			Missed: s.Missed, NextBackupDue: tp(s.NextBackupDue), ScanLastOK: tp(s.ScanLastOK),
			ScanLastError: s.ScanLastError, Catalogued: s.Catalogued, LastResult: s.LastResult}
		if s.Newest != nil {
			v.NewestKey, v.NewestCreated, v.NewestSize = s.Newest.Key, tp(s.Newest.Created), s.Newest.Size
		}
		v.ChecksumOK = s.LastResult != nil && s.LastResult.OK
		if s.LastVerified != nil {
			v.VerifiedCreated = tp(s.LastVerified.Created)
			rpo := max(0, now.Sub(s.LastVerified.Created).Seconds())
			v.RPOSeconds = &rpo
			v.RPOOK = rpo <= v.RPOTarget
		}
		out = append(out, v)
	}
	return out
}

func (d *Daemon) serveStatusJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string]any{"generated": d.opt.Now().UTC(), "targets": d.views()})
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"age": func(t *time.Time, now time.Time) string {
		if t == nil {
			return "never"
		}
		return now.Sub(*t).Round(time.Second).String() + " ago"
	},
	"dur": func(s *float64) string {
		if s == nil {
			return "n/a"
		}
		return (time.Duration(*s) * time.Second).String()
	},
	"secs": func(s float64) string { return (time.Duration(s) * time.Second).String() },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>backupverify</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.4rem .7rem;text-align:left}
th{background:#f4f4f4}.ok{color:#176117;font-weight:600}.bad{color:#a40000;font-weight:600}.muted{color:#777}
</style></head><body>
<h1>backupverify</h1>
<p class="muted">Generated {{.Now.UTC.Format "2006-01-02 15:04:05 UTC"}} · <a href="/metrics">metrics</a> · <a href="/api/v1/status">status JSON</a></p>
<table>
<tr><th>Target</th><th>Newest backup</th><th>Verification</th><th>RPO (now / objective)</th><th>Schedule</th><th>Source listing</th></tr>
{{range .Targets}}<tr>
<td>{{.Target}}<br><span class="muted">{{.Source}}</span></td>
<td>{{if .NewestKey}}{{.NewestKey}}<br><span class="muted">{{age .NewestCreated $.Now}}, {{.NewestSize}} bytes</span>{{else}}<span class="muted">none seen yet</span>{{end}}</td>
<td>{{if .LastResult}}{{if .LastResult.OK}}<span class="ok">OK</span>{{else}}<span class="bad">FAIL: {{.LastResult.Reason}}</span><br><span class="muted">{{.LastResult.Error}}</span>{{end}}{{else}}<span class="muted">never verified</span>{{end}}</td>
<td>{{if .RPOSeconds}}<span class="{{if .RPOOK}}ok{{else}}bad{{end}}">{{dur .RPOSeconds}}</span>{{else}}<span class="bad">no verified backup</span>{{end}} / {{secs .RPOTarget}}</td>
<td>{{if .Missed}}<span class="bad">backup missed</span>{{else if .NextBackupDue}}next due {{.NextBackupDue.UTC.Format "2006-01-02 15:04 UTC"}}{{else}}<span class="muted">no backup_schedule</span>{{end}}</td>
<td>{{if .ScanLastError}}<span class="bad">{{.ScanLastError}}</span>{{else}}{{age .ScanLastOK $.Now}}{{end}}</td>
</tr>{{end}}
</table></body></html>
`))

func (d *Daemon) serveStatusPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = statusPage.Execute(w, map[string]any{"Now": d.opt.Now(), "Targets": d.views()})
}

// serveTriggerDrill starts a drill now. Without a configured trigger token the
// API is read-only (404); with one, the request must carry it as a bearer
// token (compared in constant time).
func (d *Daemon) serveTriggerDrill(w http.ResponseWriter, r *http.Request) {
	token := d.Config().HTTP.TriggerToken
	if token == "" {
		http.NotFound(w, r)
		return
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="backupverify"`)
		http.Error(w, "a valid trigger token is required", http.StatusUnauthorized)
		return
	}
	name := r.PathValue("name")
	d.mu.Lock()
	sched := d.sched
	d.mu.Unlock()
	err := errors.New("not running")
	if sched != nil {
		err = sched.RunNow(name, "api")
	}
	switch {
	case errors.Is(err, scheduler.ErrUnknown):
		http.Error(w, "no such target", http.StatusNotFound)
	case errors.Is(err, scheduler.ErrRunning):
		http.Error(w, "a drill of this target is already running or queued", http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		d.log.Info("drill triggered over the API", "target", name, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]string{"target": name, "status": "started"})
	}
}
