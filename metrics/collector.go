// Package metrics exports backupverify's state to Prometheus. Per-target
// series are built at scrape time from snapshots, so they always agree with
// the state and vanish with a removed target.
package metrics

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/backupverify/backupverify/verifier"
)

const ns = "backupverify"

// Snapshotter returns the state of every configured target.
type Snapshotter interface {
	Statuses() []verifier.Status
}

// names lists every backupverify_* metric, in the order declared.
var names = []string{ns + "_build_info", ns + "_config_last_reload_successful", ns + "_config_last_reload_success_timestamp_seconds"}

func desc(name, help string, labels ...string) *prometheus.Desc {
	names = append(names, ns+"_"+name)
	return prometheus.NewDesc(ns+"_"+name, help, append([]string{"target"}, labels...), nil)
}

// Names returns the name of every backupverify_* metric the daemon exports.
func Names() []string { return append([]string(nil), names...) }

var (
	backupLast     = desc("backup_last_timestamp_seconds", "Creation time of the newest backup seen (Unix seconds; 0: never).")
	backupVerified = desc("backup_verified_timestamp_seconds", "Creation time of the newest backup that passed verification (0: never).")
	rpo            = desc("rpo_seconds", "Now minus the creation time of the newest verified backup: the RPO you have right now.")
	rpoTarget      = desc("rpo_target_seconds", "The target's rpo objective from config.")
	backupSize     = desc("backup_size_bytes", "Size of the newest backup.")
	checksumOK     = desc("backup_checksum_ok", "1 if the newest backup whose verification finished passed, else 0; absent until one finishes.")
	verifiedTotal  = desc("backups_verified_total", "Backups that passed verification.")
	verifyFailures = desc("backup_verify_failures_total", "Backups that failed verification, by reason.", "reason")
	backupMissed   = desc("backup_missed", "1 while a backup due by backup_schedule plus backup_grace has not appeared.")
	scanLastOK     = desc("scan_last_success_timestamp_seconds", "Last successful listing of the source (0: never).")
	scanErrors     = desc("scan_errors_total", "Failed listings of the source.")

	drillLastRun     = desc("drill_last_run_timestamp_seconds", "End of the last drill, pass or fail (0: never).")
	drillLastSuccess = desc("drill_last_success_timestamp_seconds", "End of the last passing drill (0: never).")
	drillSuccess     = desc("drill_success", "1 if the last drill passed, else 0; absent until the first drill.")
	drillsTotal      = desc("drills_total", "Drills run.")
	drillFailures    = desc("drill_failures_total", "Drills failed, by the phase that failed.", "phase")
	rto              = desc("rto_seconds", "Wall time of the last passing drill, download start to checks passed: the measured RTO.")
	rtoTarget        = desc("rto_target_seconds", "The target's rto objective from config.")
	drillPhase       = desc("drill_phase_seconds", "The last drill's time per phase (0 for phases it did not reach).", "phase")
	drillBackup      = desc("drill_backup_timestamp_seconds", "Creation time of the backup the last passing drill restored (0: never).")
	drillInterval    = desc("drill_interval_seconds", "Time between two scheduled drills.")
	drillInProgress  = desc("drill_in_progress", "1 while a drill runs or waits for a slot.")
	nextDrill        = desc("next_drill_timestamp_seconds", "Time of the next scheduled drill.")
	checkOK          = desc("check_ok", "1 if the integrity check passed in the last drill that ran checks, else 0.", "check")
	checkValue       = desc("check_value", "The number the integrity check measured (rows, orphans, seconds of lag).", "check")
)

var allDescs = []*prometheus.Desc{backupLast, backupVerified, rpo, rpoTarget, backupSize, checksumOK,
	verifiedTotal, verifyFailures, backupMissed, scanLastOK, scanErrors,
	drillLastRun, drillLastSuccess, drillSuccess, drillsTotal, drillFailures, rto, rtoTarget, drillPhase,
	drillBackup, drillInterval, drillInProgress, nextDrill, checkOK, checkValue}

// Collector builds the per-target series from snapshots at scrape time.
type Collector struct {
	snap Snapshotter
	now  func() time.Time
}

// NewCollector returns a Collector reading snap.
func NewCollector(snap Snapshotter, now func() time.Time) *Collector {
	return &Collector{snap: snap, now: now}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	for _, s := range c.snap.Statuses() {
		t := s.Target
		var newest, size float64
		if s.Newest != nil {
			newest, size = unix(s.Newest.Created), float64(s.Newest.Size)
		}
		var verified time.Time
		if s.LastVerified != nil {
			verified = s.LastVerified.Created
		}
		gauge(backupLast, newest, t)
		gauge(backupVerified, unix(verified), t)
		gauge(rpo, max(0, float64(now.UnixNano())/1e9-unix(verified)), t)
		gauge(rpoTarget, s.RPOTarget.Seconds(), t)
		gauge(backupSize, size, t)
		// Unknown until a verification finishes: a fresh install or an empty
		// bucket is not a failed checksum (RPO says what is wrong there).
		if s.LastResult != nil {
			gauge(checksumOK, b2f(s.LastResult.OK), t)
		}
		counter(verifiedTotal, float64(s.VerifiedTotal), t)
		for _, r := range verifier.Reasons {
			counter(verifyFailures, float64(s.Failures[r]), t, string(r))
		}
		gauge(backupMissed, b2f(s.Missed), t)
		gauge(scanLastOK, unix(s.ScanLastOK), t)
		counter(scanErrors, float64(s.ScanErrors), t)
		collectDrill(s, gauge, counter)
	}
}

func collectDrill(s verifier.Status, gauge, counter func(*prometheus.Desc, float64, ...string)) {
	t, dr := s.Target, s.Drill
	var lastRun, lastOK, rtoSecs, backupTS float64
	if dr.Last != nil {
		lastRun = unix(dr.Last.Ended)
	}
	if dr.LastOK != nil {
		lastOK, rtoSecs, backupTS = unix(dr.LastOK.Ended), float64(dr.LastOK.RTOSeconds), unix(dr.LastOK.Backup.Created)
	}
	gauge(drillLastRun, lastRun, t)
	gauge(drillLastSuccess, lastOK, t)
	if dr.Last != nil { // absent until the first drill: a new target has not failed
		gauge(drillSuccess, b2f(dr.Last.OK), t)
	}
	counter(drillsTotal, float64(dr.Total), t)
	for _, p := range verifier.Phases {
		counter(drillFailures, float64(dr.Failures[p]), t, string(p))
		var secs float64
		if dr.Last != nil {
			if ph := dr.Last.Phase(p); ph != nil {
				secs = float64(ph.Seconds)
			}
		}
		gauge(drillPhase, secs, t, string(p))
	}
	gauge(rto, rtoSecs, t)
	gauge(rtoTarget, s.RTOTarget.Seconds(), t)
	gauge(drillBackup, backupTS, t)
	gauge(drillInterval, s.DrillInterval.Seconds(), t)
	gauge(drillInProgress, b2f(dr.InProgress), t)
	gauge(nextDrill, unix(s.NextDrill), t)
	if last := lastWithChecks(dr); last != nil {
		for _, c := range last.Checks {
			gauge(checkOK, b2f(c.OK), t, c.Name)
			if c.Value != nil {
				gauge(checkValue, *c.Value, t, c.Name)
			}
		}
	}
}

// lastWithChecks is the last drill that reached its checks: a drill that
// failed before them says nothing new about the data.
func lastWithChecks(dr verifier.DrillStatus) *verifier.DrillResult {
	if dr.Last != nil && dr.Last.Phase(verifier.PhaseChecks) != nil {
		return dr.Last
	}
	return dr.LastOK
}

// BuildInfo says which build is running.
type BuildInfo struct {
	Version  string
	Revision string
}

// Registry is the daemon's private registry with its daemon-wide gauges.
type Registry struct {
	*prometheus.Registry
	ReloadOK      prometheus.Gauge
	ReloadSuccess prometheus.Gauge
}

// NewRegistry registers the target collector, build_info, the config reload
// gauges and the standard Go and process collectors on a private registry.
func NewRegistry(snap Snapshotter, now func() time.Time, bi BuildInfo) *Registry {
	r := &Registry{
		Registry: prometheus.NewRegistry(),
		ReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "config_last_reload_successful", Help: "1 if the last configuration load succeeded."}),
		ReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "config_last_reload_success_timestamp_seconds", Help: "Time of the last successful configuration load."}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
		Help: "A metric with a constant 1, labelled by version, revision and Go version."},
		[]string{"version", "revision", "goversion"})
	build.WithLabelValues(bi.Version, bi.Revision, runtime.Version()).Set(1)
	r.MustRegister(NewCollector(snap, now), build, r.ReloadOK, r.ReloadSuccess,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// MarkReload records the outcome of a configuration load.
func (r *Registry) MarkReload(ok bool, at time.Time) {
	r.ReloadOK.Set(b2f(ok))
	if ok {
		r.ReloadSuccess.Set(unix(at))
	}
}
