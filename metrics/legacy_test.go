package metrics

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/backupverify/backupverify/verifier"
)

// legacyCollector is the Collector as it was built before the scrape was
// made faster (one MustNewConstMetric per series): the reference the
// exposition must equal byte for byte (TestExpositionMatchesLegacy).
type legacyCollector struct {
	snap Snapshotter
	now  func() time.Time
}

func (c *legacyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range allDescs {
		ch <- f.desc
	}
}

// Collect is Collector.Collect as it was before series were built as
// families: one MustNewConstMetric per series.
func (c *legacyCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	gauge := func(f *family, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, v, lv...)
	}
	counter := func(f *family, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(f.desc, prometheus.CounterValue, v, lv...)
	}
	statuses := c.snap.Statuses()
	for _, s := range statuses {
		t := s.Target
		var verified time.Time
		if s.LastVerified != nil {
			verified = s.LastVerified.Created
		}
		gauge(watchStart, unix(s.Since), t)
		if s.Newest != nil {
			gauge(backupLast, unix(s.Newest.Created), t)
			gauge(backupSize, float64(s.Newest.Size), t)
		} else {
			gauge(backupLast, 0, t)
		}
		gauge(backupVerified, unix(verified), t)
		// Never verified: the age of the epoch, so that rpo > rpo_target.
		rpoSecs := float64(now.UnixNano()) / 1e9
		if d, ok := s.RPO(now); ok {
			rpoSecs = d.Seconds()
		}
		gauge(rpo, rpoSecs, t)
		gauge(rpoTarget, s.RPOTarget.Seconds(), t)
		gauge(backupsPresent, float64(s.Present), t)
		if !s.Oldest.IsZero() {
			gauge(backupOldest, unix(s.Oldest), t)
		}
		// Unknown until a verification gives a verdict: a fresh install or
		// an empty bucket is not a failed checksum (RPO says what is wrong there).
		if s.LastResult != nil {
			gauge(checksumOK, b2f(s.LastResult.OK), t)
			if a := s.LastResult.Archive; a.Format != "" {
				gauge(backupInfo, 1, t, a.Format, a.Database, a.DumpVersion)
			}
		}
		gauge(downloadFail, b2f(s.DownloadFailing), t)
		counter(verifiedTotal, float64(s.VerifiedTotal), t)
		gauge(backupMissed, b2f(s.Missed), t)
		gauge(scanLastOK, unix(s.ScanLastOK), t)
		counter(scanErrors, float64(s.ScanErrors), t)
		legacyCollectDrill(s, gauge, counter)
	}
	legacyCollectByLabel(statuses, gauge, counter)
}

// collectByLabel sends the families with a label besides target, ordered as
// the registry sorts them: by that label (its name sorts before "target"),
// then by target. Sent target by target, their sort was a sixth of a scrape
// of 1,000 targets; in order, it is one pass (BenchmarkScrape).
func legacyCollectByLabel(statuses []verifier.Status, gauge, counter func(*family, float64, ...string)) {
	for _, r := range sortedStrings(verifier.Reasons) {
		for _, s := range statuses {
			counter(verifyFailures, float64(s.Failures[verifier.Reason(r)]), s.Target, r)
		}
	}
	for _, p := range sortedStrings(verifier.Phases) {
		ph := verifier.Phase(p)
		for _, s := range statuses {
			dr := s.Drill
			counter(drillFailures, float64(dr.Failures[ph]), s.Target, p)
			if dr.Last == nil {
				continue
			}
			gauge(drillFailPhase, b2f(!dr.Last.OK && dr.Last.FailedPhase == ph), s.Target, p)
			if r := dr.Last.Phase(ph); r != nil {
				gauge(drillPhase, float64(r.Seconds), s.Target, p)
			}
		}
	}
	// Check names differ by target: by name, then target (a stable sort of
	// the checks taken in target order).
	type check struct {
		target string
		c      verifier.CheckResult
	}
	var checks []check
	for _, s := range statuses {
		if last := s.Drill.LastChecked; last != nil {
			for _, c := range last.Checks {
				checks = append(checks, check{s.Target, c})
			}
		}
	}
	sort.SliceStable(checks, func(i, j int) bool { return checks[i].c.Name < checks[j].c.Name })
	for _, k := range checks {
		gauge(checkOK, b2f(k.c.OK), k.target, k.c.Name)
		if k.c.Value == nil {
			continue
		}
		if k.c.Kind == verifier.CheckFreshness {
			gauge(checkLag, *k.c.Value, k.target, k.c.Name)
		} else {
			gauge(checkValue, *k.c.Value, k.target, k.c.Name)
		}
	}
}

func legacyCollectDrill(s verifier.Status, gauge, counter func(*family, float64, ...string)) {
	t, dr := s.Target, s.Drill
	var lastRun, lastOK, backupTS float64
	if dr.Last != nil {
		lastRun = unix(dr.Last.Ended)
	}
	if dr.LastOK != nil {
		lastOK, backupTS = unix(dr.LastOK.Ended), unix(dr.LastOK.Backup.Created)
		gauge(rto, float64(dr.LastOK.RTOSeconds), t)
	}
	gauge(drillLastRun, lastRun, t)
	gauge(drillLastSuccess, lastOK, t)
	if dr.Last != nil { // absent until the first drill: a new target has not failed
		gauge(drillSuccess, b2f(dr.Last.OK), t)
	}
	counter(drillsTotal, float64(dr.Total), t)
	counter(drillsAborted, float64(dr.Aborted), t)
	gauge(rtoTarget, s.RTOTarget.Seconds(), t)
	gauge(drillBackup, backupTS, t)
	gauge(drillInterval, s.DrillInterval.Seconds(), t)
	gauge(drillInProgress, b2f(dr.InProgress), t)
	gauge(nextDrill, unix(s.NextDrill), t)
}
