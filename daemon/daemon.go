// Package daemon runs backupverify: each target's watch loop and drill
// schedule, configuration reloads, and the HTTP server with /metrics and the
// health endpoints. Building a target's parts from the configuration is in
// targets.go, the start-up sweep in sweep.go.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"reflect"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	toolkitweb "github.com/prometheus/exporter-toolkit/web"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/report"
	"github.com/backupverify/backupverify/scheduler"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/pgscratch"
)

// DrillAndReport runs one drill and writes its report: a failed drill is
// evidence too. A drill cancelled from outside (shutdown) is no verdict and
// gets no report.
func DrillAndReport(ctx context.Context, d *verifier.Driller, st *report.Store, trigger string, log *slog.Logger) (verifier.DrillResult, report.Paths, []byte) {
	r := d.Run(ctx, trigger)
	if r.Aborted {
		log.Info("no report for an aborted drill", "target", r.Target)
		return r, report.Paths{}, nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	p, md, err := st.Write(wctx, r)
	if err != nil {
		log.Error("write drill report failed", "target", r.Target, "err", err)
	} else {
		log.Info("drill report written", "target", r.Target, "report", p.Markdown)
	}
	return r, p, md
}

// Options configure a Daemon.
type Options struct {
	ConfigPath string
	Log        *slog.Logger
	Build      metrics.BuildInfo
	Now        func() time.Time
	// Reload receives a value for every SIGHUP.
	Reload <-chan struct{}
	// Listening, if set, is called with the bound address once serving.
	Listening func(addr string)
	// WebConfigFile, if set, is an exporter-toolkit web configuration
	// (--web.config.file): TLS and basic auth for the HTTP endpoint. It is
	// read again for each connection and request, so a renewed certificate
	// or a changed password needs no restart.
	WebConfigFile string
}

// Daemon runs every target's loops and the HTTP server.
type Daemon struct {
	opt   Options
	log   *slog.Logger
	reg   *metrics.Registry
	ready atomic.Bool

	applyMu sync.Mutex // one apply at a time
	mu      sync.Mutex
	cfg     *config.Config
	targets map[string]*running
	wg      sync.WaitGroup
	sched   *scheduler.Scheduler
	reports *report.Store
	s3      s3Clients     // one client per store, kept across reloads
	gate    verifier.Gate // bounds the verifications of every target at once
}

type running struct {
	t config.Target
	c *config.Config
	*targetParts
	cancel context.CancelFunc
	done   chan struct{}
}

// New loads the configuration; an invalid one is an error.
func New(opt Options) (*Daemon, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	c, err := config.Load(opt.ConfigPath)
	if err != nil {
		return nil, err
	}
	d := &Daemon{opt: opt, log: opt.Log, cfg: c, targets: map[string]*running{}}
	d.s3.log = opt.Log
	d.reg = metrics.NewRegistry(d, opt.Now, opt.Build)
	d.reg.MarkReload(true, opt.Now())
	return d, nil
}

// Statuses implements metrics.Snapshotter, in target name order.
func (d *Daemon) Statuses() []verifier.Status {
	d.mu.Lock()
	rs := make([]*running, 0, len(d.targets))
	for _, r := range d.targets {
		rs = append(rs, r)
	}
	sched := d.sched
	d.mu.Unlock()
	var jobs map[string]scheduler.State
	if sched != nil {
		jobs = sched.Jobs()
	}
	out := make([]verifier.Status, 0, len(rs))
	for _, r := range rs {
		st := r.w.Status()
		st.Drill = r.d.Status()
		if j, ok := jobs[r.t.Name]; ok {
			st.NextDrill, st.DrillInterval = j.Next, j.Interval
			st.Drill.InProgress = st.Drill.InProgress || j.Running
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

// Run serves until ctx ends, then stops every loop and the server. routes,
// if not nil, adds routes to the server's mux beside /metrics, /healthz and
// /readyz (package web's Server.Register).
func (d *Daemon) Run(ctx context.Context, routes func(*http.ServeMux)) error {
	if err := checkWritable(d.cfg.StateDir); err != nil {
		return err
	}
	release, err := LockStateDir(d.cfg.StateDir)
	if err != nil {
		return err
	}
	defer release()
	if err := toolkitweb.Validate(d.opt.WebConfigFile); err != nil {
		return fmt.Errorf("web config %s: %w", d.opt.WebConfigFile, err)
	}
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", d.cfg.Listen, err)
	}
	// Run returns only once the spare cluster started below (and any a
	// drill started) is made: a copy of at most a second or two.
	sweep(ctx, d.cfg, d.log, d.opt.Now)
	defer pgscratch.WaitSpares()
	d.mu.Lock()
	d.sched = scheduler.New(d.cfg.Drills.MaxConcurrent, d.log)
	d.gate = verifier.NewGate(d.cfg.Verify.MaxConcurrent)
	d.mu.Unlock()
	if err := d.apply(ctx, d.cfg); err != nil {
		ln.Close()
		d.sched.Stop(time.Minute)
		return err
	}
	srv := newHTTPServer(d.handler(routes))
	// The server's own errors (a failed TLS handshake, a plain HTTP request
	// on a TLS port) go to the daemon's log, in its format.
	srv.ErrorLog = slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- toolkitweb.Serve(ln, srv, &toolkitweb.FlagConfig{WebConfigFile: &d.opt.WebConfigFile}, d.log)
	}()
	d.ready.Store(true)
	d.log.Info("serving", "addr", ln.Addr().String(), "targets", len(d.cfg.Targets), "state_dir", d.cfg.StateDir)
	if d.opt.Listening != nil {
		d.opt.Listening(ln.Addr().String())
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			runErr = fmt.Errorf("http server: %w", err)
			break loop
		case <-d.opt.Reload:
			if err := d.Reload(ctx); err != nil {
				d.log.Error("config reload failed; keeping the running config", "err", err)
			}
		}
	}
	d.ready.Store(false)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Warn("http shutdown", "err", err)
	}
	// Drills are cancelled; each drops its scratch database on the way out.
	if !d.sched.Stop(3 * time.Minute) {
		d.log.Warn("drills did not stop in time")
	}
	d.mu.Lock()
	for name, r := range d.targets {
		r.cancel()
		delete(d.targets, name)
	}
	d.mu.Unlock()
	d.wg.Wait()
	d.log.Info("stopped")
	return runErr
}

// Reload re-reads the configuration file. A bad file keeps the running
// configuration and sets the reload gauges.
func (d *Daemon) Reload(ctx context.Context) error {
	c, err := config.Load(d.opt.ConfigPath)
	if err == nil {
		err = d.apply(ctx, c)
	}
	d.reg.MarkReload(err == nil, d.opt.Now())
	if err != nil {
		return err
	}
	d.log.Info("config reloaded", "targets", len(c.Targets))
	return nil
}

// apply starts, restarts and stops target loops to match c. It reconciles in
// place: a changed target's drill schedule is re-planned without losing its
// busy flag (a drill in progress finishes and no second one starts beside
// it), only removed targets are unscheduled, and the daemon's lock is never
// held while waiting for a loop to stop, so /metrics answers throughout.
func (d *Daemon) apply(ctx context.Context, c *config.Config) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	old := d.cfg
	d.mu.Unlock()
	if old != nil && c != old {
		if c.Listen != old.Listen {
			d.log.Warn("listen changed in the config; it takes effect at restart", "listen", c.Listen)
		}
		if c.StateDir != old.StateDir {
			return fmt.Errorf("state_dir changed from %s to %s: restart the daemon to move it", old.StateDir, c.StateDir)
		}
		if c.Drills.MaxConcurrent != old.Drills.MaxConcurrent {
			d.log.Warn("drills.max_concurrent changed in the config; it takes effect at restart")
		}
		if c.Verify.MaxConcurrent != old.Verify.MaxConcurrent {
			d.log.Warn("verify.max_concurrent changed in the config; it takes effect at restart")
		}
	}
	bins, err := pgscratch.FindBins(c.PGBinDir)
	if err != nil {
		return err
	}
	instance, err := InstanceID(c.StateDir)
	if err != nil {
		return err
	}
	reports, err := newReportStore(ctx, c, &d.s3, d.log, d.opt.Now)
	if err != nil {
		return err
	}
	reports.OnError = func(op string) { d.reg.ReportErrors.WithLabelValues(op).Inc() }
	// Build every new watcher before touching the running ones, so that a
	// failure leaves the old set untouched.
	fresh := map[string]*targetParts{}
	d.mu.Lock()
	current := maps.Clone(d.targets)
	sh := &shared{bins: bins, instance: instance, s3: &d.s3, gate: d.gate}
	d.mu.Unlock()
	for _, t := range c.Targets {
		if r, ok := current[t.Name]; ok && reflect.DeepEqual(r.t, t) && r.c.S3 == c.S3 && r.c.PGBinDir == c.PGBinDir && r.c.Drills == c.Drills {
			continue
		}
		p, err := newTarget(ctx, c, t, sh, d.log, d.opt.Now)
		if err != nil {
			return err
		}
		fresh[t.Name] = p
	}
	keep := map[string]bool{}
	for _, t := range c.Targets {
		keep[t.Name] = true
	}
	// Stop the watch loops of removed and changed targets, and wait for
	// them without the lock. Their rows stay on /metrics meanwhile.
	var stopping []*running
	for name, r := range current {
		if !keep[name] || fresh[name] != nil {
			r.cancel()
			stopping = append(stopping, r)
		}
	}
	for _, r := range stopping {
		<-r.done
	}
	for name, p := range fresh {
		if r, ok := current[name]; ok {
			p.d.Continue(r.d)
			if err := p.w.Continue(r.w); err != nil {
				d.log.Error("reload: read the watch state again", "target", name, "err", err)
			}
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	for name := range current {
		if !keep[name] {
			// A drill in progress finishes.
			d.sched.Remove(name)
			delete(d.targets, name)
			d.log.Info("target removed", "target", name)
		}
	}
	for _, t := range c.Targets {
		p := fresh[t.Name]
		if p == nil {
			continue
		}
		// Set keeps the busy flag of a job of the same name.
		if err := d.sched.Set(t.Name, c.ScheduleSpec(t.Drill.Schedule), d.drillJob(p)); err != nil {
			return fmt.Errorf("target %s: drill.schedule: %w", t.Name, err)
		}
		p.w.OnSaveError = d.reg.StateWriteErrors.Inc
		p.d.OnSaveError = d.reg.StateWriteErrors.Inc
		if last := p.d.Status().Last; catchUpDue(last, p.w.Status().Since, d.sched.Interval(t.Name), d.opt.Now()) {
			d.log.Info("the last drill is older than the drill interval; drilling now", "target", t.Name)
			if err := d.sched.RunNow(t.Name, verifier.TriggerCatchUp); err != nil {
				d.log.Warn("catch-up drill not started", "target", t.Name, "err", err)
			}
		}
		tctx, cancel := context.WithCancel(ctx)
		r := &running{t: t, c: c, targetParts: p, cancel: cancel, done: make(chan struct{})}
		d.targets[t.Name] = r
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer close(r.done)
			d.supervise(tctx, "watch", t.Name, p.w.Run)
		}()
	}
	d.cfg, d.reports = c, reports
	return nil
}

// catchUpDue says whether a drill is owed at start, as anacron would run a
// job: the last drill started longer than one interval ago, or, without
// any drill, the target has been watched longer than one interval.
func catchUpDue(last *verifier.DrillResult, since time.Time, interval time.Duration, now time.Time) bool {
	if interval <= 0 {
		return false
	}
	ref := since
	if last != nil {
		ref = last.Started
	}
	return !ref.IsZero() && now.Sub(ref) >= interval
}

// drillJob is the scheduled job of a target: a drill and its report. A panic
// that escapes them is logged with its stack and counted; the schedule goes on.
func (d *Daemon) drillJob(p *targetParts) scheduler.Job {
	return func(ctx context.Context, trigger string) {
		defer func() {
			if v := recover(); v != nil {
				d.reg.LoopRestarts.WithLabelValues("drill").Inc()
				d.log.Error("drill job panicked", "target", p.d.Name(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}()
		DrillAndReport(ctx, p.d, d.Reports(), trigger, d.log)
	}
}

// loopBackoff bounds how fast a crashing loop is restarted.
var loopBackoff = struct{ min, max time.Duration }{time.Second, time.Minute}

// supervise runs fn until ctx ends. When fn returns or panics before that,
// it is restarted after a backoff that doubles up to a minute, and counted
// in backupverify_loop_restarts_total{loop}.
func (d *Daemon) supervise(ctx context.Context, loop, target string, fn func(context.Context) error) {
	wait := loopBackoff.min
	for {
		stack, err := runRecovered(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		d.reg.LoopRestarts.WithLabelValues(loop).Inc()
		d.log.Error("loop exited unexpectedly; restarting", "loop", loop, "target", target, "err", err,
			"stack", stack, "restart_in", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, loopBackoff.max)
	}
}

func runRecovered(ctx context.Context, fn func(context.Context) error) (stack string, err error) {
	defer func() {
		if v := recover(); v != nil {
			stack, err = string(debug.Stack()), fmt.Errorf("panic: %v", v)
		}
	}()
	if err := fn(ctx); err != nil {
		return "", err
	}
	return "", errors.New("returned before it was stopped")
}

// Reports returns where drill reports are kept; nil before Run.
func (d *Daemon) Reports() *report.Store {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reports
}

// RunDrill starts a drill of the named target now, as its schedule would;
// scheduler.ErrRunning if one is running or queued, ErrUnknown if no such target.
func (d *Daemon) RunDrill(name, trigger string) error {
	d.mu.Lock()
	sched := d.sched
	d.mu.Unlock()
	if sched == nil {
		return errors.New("the daemon is not running")
	}
	return sched.RunNow(name, trigger)
}

// TriggerToken returns the running configuration's http.trigger_token.
func (d *Daemon) TriggerToken() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.HTTP.TriggerToken
}
