package web

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

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

func (s *Server) views() []TargetView {
	now := s.now()
	store := s.d.Reports()
	var out []TargetView
	for _, st := range s.d.Statuses() {
		v := TargetView{Target: st.Target, Source: st.Source, RPOTarget: st.RPOTarget.Seconds(),
			Missed: st.Missed, NextBackupDue: tp(st.NextBackupDue), ScanLastOK: tp(st.ScanLastOK),
			ScanLastError: st.ScanLastError, Catalogued: st.Catalogued, LastResult: st.LastResult,
			RTOTarget: st.RTOTarget.Seconds(), DrillRunning: st.Drill.InProgress, NextDrill: tp(st.NextDrill)}
		if st.Newest != nil {
			v.NewestKey, v.NewestCreated, v.NewestSize = st.Newest.Key, tp(st.Newest.Created), st.Newest.Size
		}
		if st.LastResult != nil {
			ok := st.LastResult.OK
			v.ChecksumOK = &ok
		}
		if st.LastVerified != nil {
			v.VerifiedCreated = tp(st.LastVerified.Created)
			d, _ := st.RPO(now)
			rpo := d.Seconds()
			v.RPOSeconds = &rpo
			v.RPOOK = rpo <= v.RPOTarget
		}
		if l := st.Drill.Last; l != nil {
			dv := &DrillView{Ended: l.Ended, OK: l.OK, FailedPhase: string(l.FailedPhase), Error: l.Error,
				Seconds: l.Ended.Sub(l.Started).Seconds(), BackupKey: l.Backup.Key, Checks: len(l.Checks)}
			for _, c := range l.Checks {
				if !c.OK {
					dv.FailedChecks = append(dv.FailedChecks, c.Name)
				}
			}
			v.Drill = dv
		}
		if ok := st.Drill.LastOK; ok != nil {
			rto := float64(ok.RTOSeconds)
			v.RTOSeconds, v.LastPassEnded = &rto, tp(ok.Ended)
			v.RTOOK = rto <= v.RTOTarget
		}
		if store != nil {
			if name := store.Latest(st.Target); name != "" {
				v.LatestReport = st.Target + "/" + name
				v.ReportsListURL = "/reports/" + st.Target + "/"
			}
		}
		out = append(out, v)
	}
	return out
}

func (s *Server) serveStatusJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string]any{"generated": s.now().UTC(), "targets": s.views()})
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

//go:embed templates/status.html
var statusHTML string

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
}).Parse(statusHTML))

func (s *Server) serveStatusPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusPage.Execute(w, map[string]any{"Now": s.now(), "Targets": s.views()}); err != nil {
		s.log.Error("render status page", "err", err)
	}
}
