// Package metrics exports backupverify's state to Prometheus. Per-target
// series are built at scrape time from snapshots, so they always agree with
// the state and vanish with a removed target.
package metrics

import (
	"errors"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/backupverify/backupverify/verifier"
)

const ns = "backupverify"

// Snapshotter returns the state of every configured target.
type Snapshotter interface {
	Statuses() []verifier.Status
}

// names lists every backupverify_* metric, in the order declared.
var names = []string{ns + "_build_info", ns + "_config_last_reload_successful", ns + "_config_last_reload_success_timestamp_seconds",
	ns + "_state_write_errors_total", ns + "_report_errors_total", ns + "_loop_restarts_total"}

// family is a per-target metric: its Desc for the registry, its name and
// help for the families Collector.families builds itself.
type family struct {
	desc       *prometheus.Desc
	name, help string
	idx        int // in allDescs
}

func desc(name, help string, labels ...string) *family {
	names = append(names, ns+"_"+name)
	return &family{desc: prometheus.NewDesc(ns+"_"+name, help, append([]string{"target"}, labels...), nil),
		name: ns + "_" + name, help: help}
}

// Names returns the name of every backupverify_* metric the daemon exports.
func Names() []string { return append([]string(nil), names...) }

var (
	watchStart     = desc("watch_start_timestamp_seconds", "When this daemon first watched the target (persisted across restarts).")
	backupLast     = desc("backup_last_timestamp_seconds", "Creation time of the newest backup seen (Unix seconds; 0: never).")
	backupVerified = desc("backup_verified_timestamp_seconds", "Creation time of the newest backup still present that passed verification (0: never).")
	rpo            = desc("rpo_seconds", "Now minus the creation time of the newest verified backup still present: the RPO you have right now.")
	rpoTarget      = desc("rpo_target_seconds", "The target's rpo objective from config.")
	backupSize     = desc("backup_size_bytes", "Size of the newest backup; absent until a backup is seen.")
	backupInfo     = desc("backup_info", "1, labelled with what the newest verified-or-failed backup's header says.", "format", "database", "pg_dump_version")
	backupsPresent = desc("backups_present", "Backups in the last listing of the source.")
	backupOldest   = desc("backup_oldest_timestamp_seconds", "Creation time of the oldest backup in the last listing; absent when there is none.")
	checksumOK     = desc("backup_checksum_ok", "1 if the newest backup whose verification gave a verdict passed, else 0; absent until one does. Download errors are no verdict.")
	downloadFail   = desc("backup_download_failing", "1 while the newest backup is unverified because its last download failed; it is retried with backoff.")
	verifiedTotal  = desc("backups_verified_total", "Backups that passed verification.")
	verifyFailures = desc("backup_verify_failures_total", "Failed verifications by reason (download_error counts each failed attempt).", "reason")
	backupMissed   = desc("backup_missed", "1 while a backup due by backup_schedule plus backup_grace has not appeared.")
	scanLastOK     = desc("scan_last_success_timestamp_seconds", "Last successful listing of the source (0: never).")
	scanErrors     = desc("scan_errors_total", "Failed listings of the source.")

	drillLastRun     = desc("drill_last_run_timestamp_seconds", "End of the last drill, pass or fail (0: never).")
	drillLastSuccess = desc("drill_last_success_timestamp_seconds", "End of the last passing drill (0: never).")
	drillSuccess     = desc("drill_success", "1 if the last drill passed, else 0; absent until the first drill.")
	drillFailPhase   = desc("drill_last_failure_phase", "1 for the phase the last drill failed in, 0 for the others; all 0 when it passed; absent before the first drill.", "phase")
	drillsTotal      = desc("drills_total", "Drills run (aborted ones excluded).")
	drillsAborted    = desc("drills_aborted_total", "Drills cancelled before they finished (shutdown): no verdict, no report.")
	drillFailures    = desc("drill_failures_total", "Drills failed, by the phase that failed.", "phase")
	rto              = desc("rto_seconds", "Wall time of the last passing drill, download start to checks passed: the measured RTO; absent until a drill passes.")
	rtoTarget        = desc("rto_target_seconds", "The target's rto objective from config.")
	drillPhase       = desc("drill_phase_seconds", "The last drill's time per phase it reached; absent for phases it did not reach.", "phase")
	drillBackup      = desc("drill_backup_timestamp_seconds", "Creation time of the backup the last passing drill restored (0: never).")
	drillInterval    = desc("drill_interval_seconds", "Time between two scheduled drills.")
	drillInProgress  = desc("drill_in_progress", "1 while a drill runs or waits for a slot.")
	nextDrill        = desc("next_drill_timestamp_seconds", "Time of the next scheduled drill.")
	checkOK          = desc("check_ok", "1 if the integrity check passed in the last drill that ran checks, else 0.", "check")
	checkValue       = desc("check_value", "The dimensionless number the integrity check measured (rows, orphans, violations, a sql result).", "check")
	checkLag         = desc("check_lag_seconds", "A freshness check's lag: the backup's time minus the newest row's, at least 0.", "check")
)

var allDescs = []*family{watchStart, backupLast, backupVerified, rpo, rpoTarget, backupSize, backupInfo,
	backupsPresent, backupOldest, checksumOK, downloadFail, verifiedTotal, verifyFailures, backupMissed, scanLastOK, scanErrors,
	drillLastRun, drillLastSuccess, drillSuccess, drillFailPhase, drillsTotal, drillsAborted, drillFailures, rto, rtoTarget,
	drillPhase, drillBackup, drillInterval, drillInProgress, nextDrill, checkOK, checkValue, checkLag}

// byName is allDescs by metric name.
var byName = map[string]*family{}

func init() {
	for i, f := range allDescs {
		f.idx = i
		byName[f.name] = f
	}
}

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
	for _, f := range allDescs {
		ch <- f.desc
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

// Collect implements prometheus.Collector: the series families builds (what
// its error reports, the collecting registry's own checks refuse).
// NewRegistry's registry does not call it; its Gather takes the families.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	fams, _ := c.families()
	for _, mf := range fams {
		d := byName[mf.GetName()].desc
		for _, m := range mf.Metric {
			ch <- constSeries{d, m}
		}
	}
}

// families builds the per-target families of a scrape, sorted as a
// registry sorts them.
func (c *Collector) families() ([]*dto.MetricFamily, error) {
	now := c.now()
	statuses := c.snap.Statuses()
	e := newEmitter(len(statuses))
	targets := e.targetLabels(statuses)
	for i, s := range statuses {
		t := targets[i]
		var verified time.Time
		if s.LastVerified != nil {
			verified = s.LastVerified.Created
		}
		e.gauge(watchStart, unix(s.Since), t)
		if s.Newest != nil {
			e.gauge(backupLast, unix(s.Newest.Created), t)
			e.gauge(backupSize, float64(s.Newest.Size), t)
		} else {
			e.gauge(backupLast, 0, t)
		}
		e.gauge(backupVerified, unix(verified), t)
		// Never verified: the age of the epoch, so that rpo > rpo_target.
		rpoSecs := float64(now.UnixNano()) / 1e9
		if d, ok := s.RPO(now); ok {
			rpoSecs = d.Seconds()
		}
		e.gauge(rpo, rpoSecs, t)
		e.gauge(rpoTarget, s.RPOTarget.Seconds(), t)
		e.gauge(backupsPresent, float64(s.Present), t)
		if !s.Oldest.IsZero() {
			e.gauge(backupOldest, unix(s.Oldest), t)
		}
		// Unknown until a verification gives a verdict: a fresh install or
		// an empty bucket is not a failed checksum (RPO says what is wrong there).
		if s.LastResult != nil {
			e.gauge(checksumOK, b2f(s.LastResult.OK), t)
			if a := s.LastResult.Archive; a.Format != "" {
				// Label pairs sorted by name, as the registry wants them.
				// The header's strings are the dump's bytes: a LATIN1
				// database name is no UTF-8, and would fail the scrape.
				e.gauge(backupInfo, 1, e.labels(e.pair(&lnDatabase, strings.ToValidUTF8(a.Database, "\uFFFD")),
					e.pair(&lnFormat, a.Format), e.pair(&lnDumpVersion, strings.ToValidUTF8(a.DumpVersion, "\uFFFD")), t[0]))
			}
		}
		e.gauge(downloadFail, b2f(s.DownloadFailing), t)
		e.counter(verifiedTotal, float64(s.VerifiedTotal), t)
		e.gauge(backupMissed, b2f(s.Missed), t)
		e.gauge(scanLastOK, unix(s.ScanLastOK), t)
		e.counter(scanErrors, float64(s.ScanErrors), t)
		collectDrill(s, e, t)
	}
	collectByLabel(statuses, e, targets)
	return e.finish()
}

// collectByLabel builds the families with a label besides target, ordered as
// the registry sorts them: by that label (its name sorts before "target"),
// then by target (statuses come sorted by target). Built target by target,
// their sort was a sixth of a scrape of 1,000 targets; in order, finish's
// check is one pass (BenchmarkScrape).
func collectByLabel(statuses []verifier.Status, e *emitter, targets [][]*dto.LabelPair) {
	for _, r := range sortedStrings(verifier.Reasons) {
		rp := e.pair(&lnReason, r)
		for i, s := range statuses {
			e.counter(verifyFailures, float64(s.Failures[verifier.Reason(r)]), e.labels(rp, targets[i][0]))
		}
	}
	for _, p := range sortedStrings(verifier.Phases) {
		ph, pp := verifier.Phase(p), e.pair(&lnPhase, p)
		for i, s := range statuses {
			dr := s.Drill
			l := e.labels(pp, targets[i][0])
			e.counter(drillFailures, float64(dr.Failures[ph]), l)
			if dr.Last == nil {
				continue
			}
			e.gauge(drillFailPhase, b2f(!dr.Last.OK && dr.Last.FailedPhase == ph), l)
			if r := dr.Last.Phase(ph); r != nil {
				e.gauge(drillPhase, float64(r.Seconds), l)
			}
		}
	}
	// Check names differ by target: by name, then target (a stable sort of
	// the checks taken in target order).
	type check struct {
		target *dto.LabelPair
		c      verifier.CheckResult
	}
	var checks []check
	for i, s := range statuses {
		if last := s.Drill.LastChecked; last != nil {
			for _, c := range last.Checks {
				checks = append(checks, check{targets[i][0], c})
			}
		}
	}
	sort.SliceStable(checks, func(i, j int) bool { return checks[i].c.Name < checks[j].c.Name })
	for _, k := range checks {
		l := e.labels(e.pair(&lnCheck, k.c.Name), k.target)
		e.gauge(checkOK, b2f(k.c.OK), l)
		if k.c.Value == nil {
			continue
		}
		if k.c.Kind == verifier.CheckFreshness {
			e.gauge(checkLag, *k.c.Value, l)
		} else {
			e.gauge(checkValue, *k.c.Value, l)
		}
	}
}

// sortedStrings is vs as strings, sorted.
func sortedStrings[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	sort.Strings(out)
	return out
}

func collectDrill(s verifier.Status, e *emitter, t []*dto.LabelPair) {
	dr := s.Drill
	var lastRun, lastOK, backupTS float64
	if dr.Last != nil {
		lastRun = unix(dr.Last.Ended)
	}
	if dr.LastOK != nil {
		lastOK, backupTS = unix(dr.LastOK.Ended), unix(dr.LastOK.Backup.Created)
		e.gauge(rto, float64(dr.LastOK.RTOSeconds), t)
	}
	e.gauge(drillLastRun, lastRun, t)
	e.gauge(drillLastSuccess, lastOK, t)
	if dr.Last != nil { // absent until the first drill: a new target has not failed
		e.gauge(drillSuccess, b2f(dr.Last.OK), t)
	}
	e.counter(drillsTotal, float64(dr.Total), t)
	e.counter(drillsAborted, float64(dr.Aborted), t)
	e.gauge(rtoTarget, s.RTOTarget.Seconds(), t)
	e.gauge(drillBackup, backupTS, t)
	e.gauge(drillInterval, s.DrillInterval.Seconds(), t)
	e.gauge(drillInProgress, b2f(dr.InProgress), t)
	e.gauge(nextDrill, unix(s.NextDrill), t)
}

// BuildInfo says which build is running.
type BuildInfo struct {
	Version  string
	Revision string
}

// Registry is the daemon's private registry with its daemon-wide series.
type Registry struct {
	*prometheus.Registry
	ReloadOK      prometheus.Gauge
	ReloadSuccess prometheus.Gauge
	// StateWriteErrors counts failed writes of a state file.
	StateWriteErrors prometheus.Counter
	// ReportErrors counts drill reports not written (op "write") or not
	// copied to reports.upload (op "upload").
	ReportErrors *prometheus.CounterVec
	// LoopRestarts counts loops (watch, drill) that exited unexpectedly,
	// a panic most likely, and were restarted.
	LoopRestarts *prometheus.CounterVec

	targets *Collector
}

// describer registers the per-target families' descriptors, so that nothing
// else registers their names; their series come from Registry.Gather.
type describer struct{}

func (describer) Describe(ch chan<- *prometheus.Desc) { (*Collector)(nil).Describe(ch) }
func (describer) Collect(chan<- prometheus.Metric)    {}

// Gather implements prometheus.Gatherer: the registry's families and the
// per-target ones, which the Collector builds as families directly (see
// series.go), sorted by name as the registry sorts them.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := r.Registry.Gather()
	own, oerr := r.targets.families()
	if err == nil {
		err = oerr
	} else if oerr != nil {
		err = errors.Join(err, oerr)
	}
	mfs = append(mfs, own...)
	sort.Slice(mfs, func(i, j int) bool { return mfs[i].GetName() < mfs[j].GetName() })
	return mfs, err
}

// Report error ops, the values of report_errors_total's op label.
const (
	OpWrite  = "write"
	OpUpload = "upload"
)

// NewRegistry registers the target collector, build_info, the config reload
// gauges and the standard Go and process collectors on a private registry.
func NewRegistry(snap Snapshotter, now func() time.Time, bi BuildInfo) *Registry {
	r := &Registry{
		Registry: prometheus.NewRegistry(),
		ReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "config_last_reload_successful", Help: "1 if the last configuration load succeeded."}),
		ReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns,
			Name: "config_last_reload_success_timestamp_seconds", Help: "Time of the last successful configuration load."}),
		StateWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "state_write_errors_total", Help: "Failed writes of a state file below state_dir."}),
		ReportErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns,
			Name: "report_errors_total", Help: "Drill reports not written (op=write) or not uploaded (op=upload)."}, []string{"op"}),
		LoopRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "loop_restarts_total",
			Help: "Loops that exited unexpectedly (a panic) and were restarted: watch loops, drill jobs."}, []string{"loop"}),
	}
	for _, l := range []string{"watch", "drill"} {
		r.LoopRestarts.WithLabelValues(l)
	}
	for _, op := range []string{OpWrite, OpUpload} {
		r.ReportErrors.WithLabelValues(op) // exist at 0 from the start
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
		Help: "A metric with a constant 1, labelled by version, revision and Go version."},
		[]string{"version", "revision", "goversion"})
	build.WithLabelValues(bi.Version, bi.Revision, runtime.Version()).Set(1)
	r.targets = NewCollector(snap, now)
	r.MustRegister(describer{}, build, r.ReloadOK, r.ReloadSuccess, r.StateWriteErrors, r.ReportErrors, r.LoopRestarts,
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
