// Package daemon wires backupverify together: it builds each target's source
// and loops from the configuration, reloads it, and serves HTTP.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/report"
	"github.com/backupverify/backupverify/scheduler"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/filesource"
	"github.com/backupverify/backupverify/verifier/pgscratch"
	"github.com/backupverify/backupverify/verifier/s3source"
)

// NewSource builds the Source a target's source URL names.
func NewSource(ctx context.Context, c *config.Config, t config.Target) (verifier.Source, error) {
	if bucket, prefix, err := config.ParseS3URL(t.Source); err == nil {
		return s3source.New(ctx, s3source.Options{
			Bucket: bucket, Prefix: prefix, Region: c.S3.Region, Endpoint: c.S3.Endpoint,
			PathStyle: c.S3.PathStyle, MaxAttempts: c.S3.MaxAttempts, ReadTimeout: c.S3.ReadTimeout.D(),
		})
	}
	return filesource.New(config.FilePath(t.Source)), nil
}

// NewWatchers builds a watcher per target of c (or only the one named).
func NewWatchers(ctx context.Context, c *config.Config, only string, log *slog.Logger, now func() time.Time) ([]*verifier.Watcher, error) {
	parts, err := newTargets(ctx, c, only, log, now)
	if err != nil {
		return nil, err
	}
	out := make([]*verifier.Watcher, len(parts))
	for i, p := range parts {
		out[i] = p.w
	}
	return out, nil
}

// NewDrillers builds a driller per target of c (or only the one named).
func NewDrillers(ctx context.Context, c *config.Config, only string, log *slog.Logger, now func() time.Time) ([]*verifier.Driller, error) {
	parts, err := newTargets(ctx, c, only, log, now)
	if err != nil {
		return nil, err
	}
	out := make([]*verifier.Driller, len(parts))
	for i, p := range parts {
		out[i] = p.d
	}
	return out, nil
}

func newTargets(ctx context.Context, c *config.Config, only string, log *slog.Logger, now func() time.Time) ([]*targetParts, error) {
	bins, err := pgscratch.FindBins(c.PGBinDir)
	if err != nil {
		return nil, err
	}
	var out []*targetParts
	for _, t := range c.Targets {
		if only != "" && t.Name != only {
			continue
		}
		p, err := newTarget(ctx, c, t, bins, log, now)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if only != "" && len(out) == 0 {
		return nil, fmt.Errorf("no target named %q in the configuration", only)
	}
	return out, nil
}

// targetParts are the loops of one target.
type targetParts struct {
	w *verifier.Watcher
	d *verifier.Driller
}

func newTarget(ctx context.Context, c *config.Config, t config.Target, bins pgscratch.Bins, log *slog.Logger, now func() time.Time) (*targetParts, error) {
	src, err := NewSource(ctx, c, t)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	ar := pgscratch.ArchiveReader{Bins: bins}
	w, err := verifier.NewWatcher(t, src, ar, c.StateDir, log, now)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	d := verifier.NewDriller(t, src, ar, newScratch(c, t, bins, log, now), newChecker(t), c.StateDir, log, now)
	return &targetParts{w: w, d: d}, nil
}

func newScratch(c *config.Config, t config.Target, bins pgscratch.Bins, log *slog.Logger, now func() time.Time) verifier.Scratch {
	if t.Drill.Scratch == config.ScratchEmbedded {
		return &pgscratch.Embedded{Bins: bins, Dir: filepath.Join(c.StateDir, "scratch"), Log: log, Now: now}
	}
	return &pgscratch.Server{Bins: bins, AdminDSN: t.Drill.Scratch, Log: log, Now: now}
}

// newChecker returns the target's integrity checks, or nil without any.
func newChecker(t config.Target) verifier.Checker {
	if len(t.Checks) == 0 {
		return nil
	}
	return verifier.NewChecks(t.Checks)
}

// sweep removes what drills that did not finish left behind: downloaded
// files, embedded clusters, and databases and roles on scratch servers.
// Only one daemon may use a state_dir or a scratch server's prefix.
func sweep(ctx context.Context, c *config.Config, log *slog.Logger, now func() time.Time) {
	if err := os.RemoveAll(verifier.TempDir(c.StateDir)); err != nil {
		log.Warn("remove leftover drill files", "err", err)
	}
	bins, err := pgscratch.FindBins(c.PGBinDir)
	if err != nil {
		return
	}
	emb := &pgscratch.Embedded{Bins: bins, Dir: filepath.Join(c.StateDir, "scratch"), Log: log, Now: now}
	if err := emb.Sweep(ctx); err != nil {
		log.Warn("sweep embedded scratch clusters", "err", err)
	}
	byDSN := map[string][]string{}
	for _, t := range c.Targets {
		if t.Drill.Scratch != config.ScratchEmbedded {
			byDSN[t.Drill.Scratch] = append(byDSN[t.Drill.Scratch], t.Name)
		}
	}
	for dsn, names := range byDSN {
		srv := &pgscratch.Server{Bins: bins, AdminDSN: dsn, Log: log, Now: now}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := srv.Sweep(sctx, names); err != nil {
			log.Warn("sweep scratch server", "scratch", srv.Kind(), "err", err)
		}
		cancel()
	}
}

// NewReportStore returns where drill reports of c are kept (and copied to).
func NewReportStore(ctx context.Context, c *config.Config, log *slog.Logger, now func() time.Time) (*report.Store, error) {
	st := &report.Store{Dir: filepath.Join(c.StateDir, "reports"), Retention: c.Reports.Retention.D(), Log: log, Now: now}
	if c.Reports.Upload != "" {
		bucket, prefix, err := config.ParseS3URL(c.Reports.Upload)
		if err != nil {
			return nil, err
		}
		up, err := s3source.New(ctx, s3source.Options{Bucket: bucket, Prefix: prefix, Region: c.S3.Region,
			Endpoint: c.S3.Endpoint, PathStyle: c.S3.PathStyle, MaxAttempts: c.S3.MaxAttempts, ReadTimeout: c.S3.ReadTimeout.D()})
		if err != nil {
			return nil, fmt.Errorf("reports.upload: %w", err)
		}
		st.Upload = up
	}
	return st, nil
}

// DrillAndReport runs one drill and writes its report, even when the drill
// was cancelled: a failed drill is evidence too.
func DrillAndReport(ctx context.Context, d *verifier.Driller, st *report.Store, trigger string, log *slog.Logger) (verifier.DrillResult, report.Paths, []byte) {
	r := d.Run(ctx, trigger)
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
}

// Daemon runs every target's loops and the HTTP server.
type Daemon struct {
	opt   Options
	log   *slog.Logger
	reg   *metrics.Registry
	ready atomic.Bool

	mu      sync.Mutex
	cfg     *config.Config
	targets map[string]*running
	wg      sync.WaitGroup
	sched   *scheduler.Scheduler
	reports *report.Store
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
	out := make([]verifier.Status, 0, len(rs))
	for _, r := range rs {
		st := r.w.Status()
		st.Drill = r.d.Status()
		if sched != nil {
			st.NextDrill, st.DrillInterval = sched.Next(r.t.Name), sched.Interval(r.t.Name)
			st.Drill.InProgress = st.Drill.InProgress || sched.Running(r.t.Name)
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
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", d.cfg.Listen, err)
	}
	sweep(ctx, d.cfg, d.log, d.opt.Now)
	d.mu.Lock()
	d.sched = scheduler.New(d.cfg.Drills.MaxConcurrent, d.log)
	d.mu.Unlock()
	if err := d.apply(ctx, d.cfg); err != nil {
		ln.Close()
		d.sched.Stop(time.Minute)
		return err
	}
	srv := &http.Server{Handler: d.handler(routes), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
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

// apply starts, restarts and stops target loops to match c.
func (d *Daemon) apply(ctx context.Context, c *config.Config) error {
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
	}
	bins, err := pgscratch.FindBins(c.PGBinDir)
	if err != nil {
		return err
	}
	reports, err := NewReportStore(ctx, c, d.log, d.opt.Now)
	if err != nil {
		return err
	}
	// Build every new watcher before touching the running ones, so that a
	// failure leaves the old set untouched.
	fresh := map[string]*targetParts{}
	d.mu.Lock()
	current := d.targets
	d.mu.Unlock()
	for _, t := range c.Targets {
		if r, ok := current[t.Name]; ok && reflect.DeepEqual(r.t, t) && r.c.S3 == c.S3 && r.c.PGBinDir == c.PGBinDir {
			continue
		}
		p, err := newTarget(ctx, c, t, bins, d.log, d.opt.Now)
		if err != nil {
			return err
		}
		fresh[t.Name] = p
	}
	keep := map[string]bool{}
	for _, t := range c.Targets {
		keep[t.Name] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, r := range d.targets {
		if !keep[name] || fresh[name] != nil {
			// A drill in progress finishes; the watch loop stops now.
			d.sched.Remove(name)
			r.cancel()
			<-r.done
			delete(d.targets, name)
			if !keep[name] {
				d.log.Info("target removed", "target", name)
			}
		}
	}
	for _, t := range c.Targets {
		p := fresh[t.Name]
		if p == nil {
			continue
		}
		if err := d.sched.Set(t.Name, t.Drill.Schedule, func(ctx context.Context, trigger string) {
			DrillAndReport(ctx, p.d, d.Reports(), trigger, d.log)
		}); err != nil {
			return fmt.Errorf("target %s: drill.schedule: %w", t.Name, err)
		}
		w := p.w
		tctx, cancel := context.WithCancel(ctx)
		r := &running{t: t, c: c, targetParts: p, cancel: cancel, done: make(chan struct{})}
		d.targets[t.Name] = r
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer close(r.done)
			defer func() {
				if p := recover(); p != nil {
					d.log.Error("watch loop panicked", "target", t.Name, "panic", fmt.Sprint(p))
				}
			}()
			_ = w.Run(tctx)
		}()
	}
	d.cfg, d.reports = c, reports
	return nil
}

// Reports returns where drill reports are kept; nil before Run.
func (d *Daemon) Reports() *report.Store {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reports
}

// checkWritable makes state_dir if need be and proves it can be written.
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("state_dir %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
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
