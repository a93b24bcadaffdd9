package daemon

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
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
	mux.HandleFunc("GET /reports/{target}/{$}", d.serveReports)
	mux.HandleFunc("GET /reports/{target}/{file}", d.serveReports)
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
	ChecksumOK      *bool            `json:"checksum_ok"` // null: no verification finished yet
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

	Drill          *DrillView `json:"last_drill,omitempty"`
	LastPassEnded  *time.Time `json:"last_passing_drill,omitempty"`
	RTOSeconds     *float64   `json:"rto_seconds"` // null: no passing drill
	RTOTarget      float64    `json:"rto_target_seconds"`
	RTOOK          bool       `json:"rto_ok"`
	DrillRunning   bool       `json:"drill_in_progress"`
	NextDrill      *time.Time `json:"next_drill,omitempty"`
	LatestReport   string     `json:"latest_report,omitempty"` // path below /reports/
	ReportsListURL string     `json:"reports_url,omitempty"`
}

// DrillView is the last drill in brief.
type DrillView struct {
	Ended        time.Time `json:"ended"`
	OK           bool      `json:"ok"`
	FailedPhase  string    `json:"failed_phase,omitempty"`
	Error        string    `json:"error,omitempty"`
	Seconds      float64   `json:"seconds"`
	BackupKey    string    `json:"backup_key"`
	FailedChecks []string  `json:"failed_checks,omitempty"`
	Checks       int       `json:"checks"`
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (d *Daemon) views() []TargetView {
	now := d.opt.Now()
	store := d.reportStore()
	var out []TargetView
	for _, s := range d.Statuses() {
		v := TargetView{Target: s.Target, Source: s.Source, RPOTarget: s.RPOTarget.Seconds(),
			Missed: s.Missed, NextBackupDue: tp(s.NextBackupDue), ScanLastOK: tp(s.ScanLastOK),
			ScanLastError: s.ScanLastError, Catalogued: s.Catalogued, LastResult: s.LastResult,
			RTOTarget: s.RTOTarget.Seconds(), DrillRunning: s.Drill.InProgress, NextDrill: tp(s.NextDrill)}
		if s.Newest != nil {
			v.NewestKey, v.NewestCreated, v.NewestSize = s.Newest.Key, tp(s.Newest.Created), s.Newest.Size
		}
		if s.LastResult != nil {
			ok := s.LastResult.OK
			v.ChecksumOK = &ok
		}
		if s.LastVerified != nil {
			v.VerifiedCreated = tp(s.LastVerified.Created)
			rpo := max(0, now.Sub(s.LastVerified.Created).Seconds())
			v.RPOSeconds = &rpo
			v.RPOOK = rpo <= v.RPOTarget
		}
		if l := s.Drill.Last; l != nil {
			dv := &DrillView{Ended: l.Ended, OK: l.OK, FailedPhase: string(l.FailedPhase), Error: l.Error,
				Seconds: l.Ended.Sub(l.Started).Seconds(), BackupKey: l.Backup.Key, Checks: len(l.Checks)}
			for _, c := range l.Checks {
				if !c.OK {
					dv.FailedChecks = append(dv.FailedChecks, c.Name)
				}
			}
			v.Drill = dv
		}
		if ok := s.Drill.LastOK; ok != nil {
			rto := float64(ok.RTOSeconds)
			v.RTOSeconds, v.LastPassEnded = &rto, tp(ok.Ended)
			v.RTOOK = rto <= v.RTOTarget
		}
		if store != nil {
			if name := store.Latest(s.Target); name != "" {
				v.LatestReport = s.Target + "/" + name
				v.ReportsListURL = "/reports/" + s.Target + "/"
			}
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

// human writes a duration in seconds the way a person reads it.
func human(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < 48*time.Hour:
		out := d.Round(time.Second).String()
		for _, zero := range []string{"0s", "0m"} { // 25h0m0s reads as 25h
			if strings.HasSuffix(out, "m"+zero) || strings.HasSuffix(out, "h"+zero) {
				out = strings.TrimSuffix(out, zero)
			}
		}
		return out
	default:
		return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ptr": func(t time.Time) *time.Time { return &t },
	"ago": func(t *time.Time, now time.Time) string {
		if t == nil {
			return "never"
		}
		return human(now.Sub(*t).Seconds()) + " ago"
	},
	"in": func(t *time.Time, now time.Time) string {
		if t == nil {
			return "not scheduled"
		}
		return "in " + human(t.Sub(now).Seconds())
	},
	"h":   func(s float64) string { return human(s) },
	"hp":  func(s *float64) string { return human(*s) },
	"utc": func(t *time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"bytes": func(n int64) string {
		switch {
		case n >= 1<<30:
			return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
		case n >= 1<<20:
			return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
		}
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>backupverify</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem 2rem;color:#1d1d1f;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .2rem}.sub{color:#666;margin:0 0 1.2rem;font-size:.9rem}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.08)}
th,td{border-bottom:1px solid #e5e5e5;padding:.55rem .8rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f2f2f2;font-weight:600;font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;color:#444}
.ok{color:#11733a;font-weight:600}.bad{color:#b3261e;font-weight:600}.warn{color:#9a6700;font-weight:600}
.muted{color:#777;font-size:.82rem}.name{font-weight:600;font-size:1rem}
.err{color:#b3261e;font-size:.8rem;max-width:26rem;overflow-wrap:anywhere}
a{color:#0b57d0}
</style></head><body>
<h1>backupverify</h1>
<p class="sub">{{len .Targets}} target(s) · generated {{.Now.UTC.Format "2006-01-02 15:04:05 UTC"}} · <a href="/metrics">metrics</a> · <a href="/api/v1/status">status JSON</a></p>
<table>
<tr><th>Target</th><th>Newest backup</th><th>Verification</th><th>RPO now / objective</th><th>Last drill</th><th>RTO / objective</th><th>Checks</th><th>Next drill</th><th>Reports</th></tr>
{{range .Targets}}<tr>
<td><span class="name">{{.Target}}</span><br><span class="muted">{{.Source}}</span></td>
<td>{{if .NewestKey}}{{.NewestKey}}<br><span class="muted">created {{ago .NewestCreated $.Now}} · {{bytes .NewestSize}}</span>{{else}}<span class="warn">none seen yet</span>{{end}}
{{if .Missed}}<br><span class="bad">scheduled backup missed</span>{{end}}
{{if .ScanLastError}}<br><span class="err">listing failed: {{.ScanLastError}}</span>{{end}}</td>
<td>{{if .LastResult}}{{if .LastResult.OK}}<span class="ok">OK</span>{{else}}<span class="bad">FAIL: {{.LastResult.Reason}}</span><br><span class="err">{{.LastResult.Error}}</span>{{end}}{{else}}<span class="muted">not verified yet</span>{{end}}</td>
<td>{{if .RPOSeconds}}<span class="{{if .RPOOK}}ok{{else}}bad{{end}}">{{hp .RPOSeconds}}</span>{{else}}<span class="bad">no verified backup</span>{{end}} / {{h .RPOTarget}}</td>
<td>{{with .Drill}}{{if .OK}}<span class="ok">PASS</span>{{else}}<span class="bad">FAIL in {{.FailedPhase}}</span><br><span class="err">{{.Error}}</span>{{end}}<br><span class="muted">ended {{ago (ptr .Ended) $.Now}}</span>{{else}}<span class="muted">never drilled</span>{{end}}{{if .DrillRunning}}<br><span class="warn">drill in progress</span>{{end}}</td>
<td>{{if .RTOSeconds}}<span class="{{if .RTOOK}}ok{{else}}bad{{end}}">{{hp .RTOSeconds}}</span>{{else}}<span class="muted">no passing drill</span>{{end}} / {{h .RTOTarget}}</td>
<td>{{with .Drill}}{{if .FailedChecks}}{{range .FailedChecks}}<span class="bad">✗ {{.}}</span><br>{{end}}{{else if .Checks}}<span class="ok">all {{.Checks}} pass</span>{{else}}<span class="muted">none configured</span>{{end}}{{else}}<span class="muted">-</span>{{end}}</td>
<td>{{in .NextDrill $.Now}}{{if .NextDrill}}<br><span class="muted">{{utc .NextDrill}}</span>{{end}}</td>
<td>{{if .LatestReport}}<a href="/reports/{{.LatestReport}}.md">latest</a> · <a href="/reports/{{.LatestReport}}.json">json</a><br><a href="{{.ReportsListURL}}">all reports</a>{{else}}<span class="muted">none yet</span>{{end}}</td>
</tr>{{end}}
</table></body></html>
`))

func (d *Daemon) serveStatusPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusPage.Execute(w, map[string]any{"Now": d.opt.Now(), "Targets": d.views()}); err != nil {
		d.log.Error("render status page", "err", err)
	}
}

// reportName is a stored report's file name.
var reportName = regexp.MustCompile(`^\d{8}T\d{6}Z\.(md|json)$`)

// serveReports serves state_dir/reports: /reports/<target>/ lists a target's
// reports, /reports/<target>/<name>.md|.json is one. Nothing else is served.
func (d *Daemon) serveReports(w http.ResponseWriter, r *http.Request) {
	store := d.reportStore()
	target, file := r.PathValue("target"), r.PathValue("file")
	if store == nil || !targetName.MatchString(target) {
		http.NotFound(w, r)
		return
	}
	dir := filepath.Join(store.Dir, target)
	if file == "" {
		ents, err := os.ReadDir(dir)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		var names []string
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), ".md"); ok && reportName.MatchString(e.Name()) {
				names = append(names, n)
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(names)))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = reportList.Execute(w, map[string]any{"Target": target, "Names": names})
		return
	}
	if !reportName.MatchString(file) {
		http.NotFound(w, r)
		return
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	ct := "text/plain; charset=utf-8" // Markdown shown as text, never as HTML
	if strings.HasSuffix(file, ".json") {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}

var targetName = regexp.MustCompile(`^[a-z0-9_-]+$`)

var reportList = template.Must(template.New("list").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Target}}: drill reports</title>
<style>body{font-family:system-ui,sans-serif;margin:1.5rem 2rem}li{margin:.2rem 0}</style></head><body>
<h1>Drill reports: {{.Target}}</h1><p><a href="/">status</a></p>
<ul>{{range .Names}}<li>{{.}}: <a href="{{.}}.md">report</a> · <a href="{{.}}.json">json</a></li>{{else}}<li>none yet</li>{{end}}</ul>
</body></html>
`))

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
	err := d.RunDrill(name, "api")
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
