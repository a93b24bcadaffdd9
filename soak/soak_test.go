package soak

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"
)

// TestSoak runs the simulated day. By default it is the short run: every
// fault of the plan once. SOAK_DURATION (e.g. 60m, as `make soak` sets it)
// runs the plan round and round, one slot per minute at least, for that long.
//
// It needs PostgreSQL, versitygw and Prometheus. Outside CI a missing
// Prometheus skips the test; under CI=true every missing tool fails it.
func TestSoak(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "true" {
			t.Skip("prometheus is not installed (run `make deps`); under CI=true this fails")
		}
		t.Fatal("prometheus is required (run `make deps`, which installs it)")
	}
	var duration time.Duration
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		if duration, err = time.ParseDuration(s); err != nil {
			t.Fatalf("SOAK_DURATION=%q: %v", s, err)
		}
	}
	begin := time.Now()
	e := newEnv(t)
	// Before the daemon starts: a backup dated two hours ago (a host whose
	// backups are kept), then a fresh one.
	e.oldBackup = e.backup(backupOpts{name: "0000-old", headerShift: -2 * time.Hour})
	if n := len(e.dump("crm")); n < 16<<10 {
		t.Fatalf("the sample dump is %d bytes; the body faults need more than 12 KiB", n)
	}
	e.backup(backupOpts{})
	e.start(promBin)
	t.Logf("set-up took %s", time.Since(begin).Round(time.Second))

	var slots []*slotRec
	rounds := 0
	for {
		for _, f := range plan() {
			if duration > 0 && time.Since(begin) > duration {
				break
			}
			slotStart := time.Now()
			slots = append(slots, e.runSlot(f))
			if duration > 0 {
				e.sleep(time.Minute - time.Since(slotStart)) // one fault per minute
			}
		}
		rounds++
		if duration == 0 || time.Since(begin) > duration {
			break
		}
	}

	// The end of the day: nothing pending or firing, nothing left behind,
	// memory flat.
	if !e.tryUntil(30*time.Second, func() bool {
		act, err := e.activeAlerts()
		return err == nil && len(act) == 0
	}) {
		act, _ := e.activeAlerts()
		t.Errorf("alerts still pending or firing at the end: %v", keys(act))
	}
	if l := e.leaks(); len(l) > 0 {
		t.Errorf("left behind while idle: %s", strings.Join(l, "; "))
	}
	rssNote := e.checkRSS()
	if err := e.stopDaemon(syscall.SIGTERM); err != nil {
		t.Errorf("daemon exit after SIGTERM: %v", err)
	}
	if l := e.leaks(); len(l) > 0 {
		t.Errorf("left behind after shutdown: %s", strings.Join(l, "; "))
	}
	if n := e.obs.errors(); n > 0 {
		t.Logf("%d Prometheus queries failed during the run", n)
	}

	table := renderTable(slots)
	t.Logf("soak: %d slot(s), %d round(s) in %s; %s\n%s", len(slots), rounds, time.Since(begin).Round(time.Second), rssNote, table)
	if path := os.Getenv("SOAK_TABLE"); path != "" {
		os.WriteFile(path, []byte(table+"\n"+rssNote+"\n"), 0o644)
	}
	for _, s := range slots {
		if !s.pass() {
			t.Errorf("%s: %s", s.fault.name, strings.Join(s.problems(), "; "))
		}
	}
}

// checkRSS compares the daemon's resident memory in the last quarter of the
// run with the first quarter. Samples of the first minute after each start
// are left out (a process grows into its working set).
func (e *env) checkRSS() string {
	var steady []rssSample
	startOf := map[int]time.Time{}
	for _, s := range e.rss {
		if _, ok := startOf[s.pid]; !ok {
			startOf[s.pid] = s.at
		}
		if s.at.Sub(startOf[s.pid]) >= time.Minute {
			steady = append(steady, s)
		}
	}
	if len(steady) < 8 {
		e.t.Errorf("only %d RSS samples", len(steady))
		return "RSS: too few samples"
	}
	q := len(steady) / 4
	mean := func(s []rssSample) float64 {
		var sum int64
		for _, x := range s {
			sum += x.kib
		}
		return float64(sum) / float64(len(s))
	}
	first, last := mean(steady[:q]), mean(steady[len(steady)-q:])
	change := (last - first) / first
	note := fmt.Sprintf("daemon RSS: first quarter %.1f MiB, last quarter %.1f MiB (%+.1f%%, %d samples)",
		first/1024, last/1024, 100*change, len(steady))
	if change > 0.10 || change < -0.10 {
		e.t.Errorf("%s: not within 10%%", note)
	}
	return note
}

// slotRec is what was seen during one slot.
type slotRec struct {
	fault    fault
	start    time.Time
	healAt   time.Time
	clearAt  time.Time // all alerts gone after healing (zero: never)
	natural  bool      // cleared without a new backup or drill
	carried  map[string]bool
	first    map[string]time.Time
	holdMiss []string
	notes    []string
	end      time.Time
}

func (s *slotRec) observed() []string { return keys(s.first) }

func matches(exp, got string) bool {
	if strings.Contains(exp, ":") {
		return exp == got
	}
	name, _, _ := strings.Cut(got, ":")
	return name == exp
}

func (s *slotRec) missing() []string {
	var out []string
	for _, exp := range s.fault.expect {
		found := false
		for got := range s.first {
			found = found || matches(exp, got)
		}
		if !found {
			out = append(out, exp)
		}
	}
	return out
}

func (s *slotRec) unexpected() []string {
	var out []string
	for got := range s.first {
		ok := false
		for _, exp := range s.fault.expect {
			ok = ok || matches(exp, got)
		}
		if !ok {
			out = append(out, got)
		}
	}
	sort.Strings(out)
	return out
}

func (s *slotRec) problems() []string {
	var p []string
	if m := s.missing(); len(m) > 0 {
		p = append(p, "expected but not seen: "+strings.Join(m, ", "))
	}
	if u := s.unexpected(); len(u) > 0 {
		p = append(p, "not expected: "+strings.Join(u, ", "))
	}
	if len(s.holdMiss) > 0 {
		p = append(p, "resolved too early: "+strings.Join(s.holdMiss, ", "))
	}
	switch {
	case s.clearAt.IsZero():
		p = append(p, "alerts did not resolve")
	case s.fault.natural > 0 && !s.natural:
		p = append(p, fmt.Sprintf("resolved only by a new backup or drill, not within %s on its own", s.fault.natural))
	}
	return append(p, s.notes...)
}

func (s *slotRec) pass() bool { return len(s.problems()) == 0 }

// runSlot injects one fault, watches the alerts, and heals.
func (e *env) runSlot(f fault) *slotRec {
	if wait := f.watched - time.Since(e.started); wait > 0 {
		e.sleep(wait)
	}
	rec := e.obs.begin(f)
	e.t.Logf("slot: %s", f.name)
	rec.notes = f.inject(e)

	// The expected alerts have a few scrapes and evaluations to show; with
	// none expected, the same time shows any that should not be there.
	e.obs.waitSeen(e, 6*time.Second, f.expect...)
	e.sleep(2 * time.Second)
	if len(f.hold) > 0 {
		act, _ := e.activeAlerts()
		for _, h := range f.hold {
			if !act[h] {
				rec.holdMiss = append(rec.holdMiss, h)
			}
		}
	}

	// Heal: the fault goes away; some alerts must resolve on their own.
	e.s3.Proxy.SetHook(nil)
	e.setRestoreMode("")
	rec.healAt = time.Now()
	clear := func() bool {
		act, err := e.activeAlerts()
		return err == nil && len(act) == 0
	}
	if f.natural > 0 && e.tryUntil(f.natural, clear) {
		rec.natural = true
		rec.clearAt = time.Now()
	}
	e.locked = false
	if rec.clearAt.IsZero() {
		// A new good backup, and a passing drill if a drill alert is up.
		e.backupVerified(backupOpts{}, 30*time.Second)
		act, _ := e.activeAlerts()
		if act["BackupVerifyDrillFailed:warning"] || act["BackupVerifyDrillFailed:critical"] ||
			act["BackupVerifyIntegrityCheckFailed:critical"] || act["BackupVerifyDrillOverdue:critical"] {
			if !e.drill(drillTO + 40*time.Second) {
				rec.notes = append(rec.notes, "the healing drill did not end")
			}
		}
		if e.tryUntil(30*time.Second, clear) {
			rec.clearAt = time.Now()
		}
	}
	e.obs.end()
	rec.end = time.Now()
	for _, u := range rec.unexpected() {
		if strings.HasPrefix(u, "BackupVerifyDown:") {
			// Was the daemon slow to answer, or down? Say which.
			secs := time.Since(rec.start).Seconds() + 5
			if v, ok := e.promQuery(fmt.Sprintf(`max_over_time(scrape_duration_seconds{job="backupverify"}[%.0fs])`, secs)); ok {
				rec.notes = append(rec.notes, fmt.Sprintf("slowest scrape of the slot took %.2fs (timeout 1s)", v))
			}
		}
	}
	verdict := "PASS"
	if !rec.pass() {
		verdict = "FAIL: " + strings.Join(rec.problems(), "; ")
	}
	e.t.Logf("slot done: %s: observed %v: %s", f.name, rec.observed(), verdict)
	return rec
}

// observer polls Prometheus for ALERTS every 500ms and records, per slot,
// when each alert was first seen pending or firing. Alerts already active
// when a slot begins (left over from the one before) are not the slot's
// unless they resolve and come back.
type observer struct {
	mu     sync.Mutex
	active map[string]bool
	polled time.Time
	cur    *slotRec
	errs   int
	quit   chan struct{}
	done   chan struct{}
}

func newObserver() *observer {
	return &observer{active: map[string]bool{}, quit: make(chan struct{}), done: make(chan struct{})}
}

func (o *observer) run(e *env) {
	defer close(o.done)
	tk := time.NewTicker(500 * time.Millisecond)
	defer tk.Stop()
	for {
		act, err := e.activeAlerts()
		now := time.Now()
		o.mu.Lock()
		if err != nil {
			o.errs++
		} else {
			o.active, o.polled = act, now
			if s := o.cur; s != nil {
				for a := range s.carried {
					if !act[a] {
						delete(s.carried, a)
					}
				}
				for a := range act {
					if _, seen := s.first[a]; !seen && !s.carried[a] {
						s.first[a] = now
					}
				}
			}
		}
		o.mu.Unlock()
		select {
		case <-o.quit:
			return
		case <-tk.C:
		}
	}
}

func (o *observer) stop() {
	select {
	case <-o.quit:
	default:
		close(o.quit)
	}
	<-o.done
}

func (o *observer) errors() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.errs
}

func (o *observer) begin(f fault) *slotRec {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := &slotRec{fault: f, start: time.Now(), carried: map[string]bool{}, first: map[string]time.Time{}}
	for a := range o.active {
		s.carried[a] = true
	}
	o.cur = s
	return s
}

func (o *observer) end() {
	o.mu.Lock()
	o.cur = nil
	o.mu.Unlock()
}

// seen says whether every expectation has been observed in this slot.
func (o *observer) seen(exps ...string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cur == nil {
		return false
	}
	for _, exp := range exps {
		found := false
		for got := range o.cur.first {
			found = found || matches(exp, got)
		}
		if !found {
			return false
		}
	}
	return true
}

// waitSeen waits, at most within, until every expectation was observed.
func (o *observer) waitSeen(e *env, within time.Duration, exps ...string) bool {
	if len(exps) == 0 {
		return true
	}
	return e.tryUntil(within, func() bool { return o.seen(exps...) })
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// short names an alert without its common prefix, for the table.
func short(a string) string {
	a = strings.TrimPrefix(a, "BackupVerify")
	a = strings.Replace(a, ":critical", "(crit)", 1)
	return strings.Replace(a, ":warning", "(warn)", 1)
}

func shorts(as []string) string {
	if len(as) == 0 {
		return "-"
	}
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = short(a)
	}
	return strings.Join(out, ", ")
}

// renderTable is the day's table: fault, expected alerts, observed alerts,
// time to fire (first pending, for the last expected alert to show), time
// to resolve (from healing to no alert pending or firing), verdict.
func renderTable(slots []*slotRec) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "#\tfault\texpected\tobserved\tto fire\tto resolve\tslot\tresult")
	for i, s := range slots {
		// Until the last expected alert (of those seen) went pending.
		fire := "-"
		var last time.Time
		for got, at := range s.first {
			for _, exp := range s.fault.expect {
				if matches(exp, got) && at.After(last) {
					last = at
				}
			}
		}
		if !last.IsZero() {
			fire = last.Sub(s.start).Round(100 * time.Millisecond).String()
		}
		resolve := "never"
		if !s.clearAt.IsZero() {
			resolve = s.clearAt.Sub(s.healAt).Round(100 * time.Millisecond).String()
			if !s.natural && s.fault.natural > 0 {
				resolve += " (forced)"
			}
		}
		result := "PASS"
		if !s.pass() {
			result = "FAIL: " + strings.Join(s.problems(), "; ")
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, s.fault.name, shorts(s.fault.expect), shorts(s.observed()), fire, resolve,
			s.end.Sub(s.start).Round(time.Second), result)
	}
	w.Flush()
	return b.String()
}
