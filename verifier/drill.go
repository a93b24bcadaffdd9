package verifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Phase is a drill phase; it is a metric label.
type Phase string

// Drill phases, in order.
const (
	PhaseDownload Phase = "download"
	PhaseVerify   Phase = "verify"
	PhaseRestore  Phase = "restore"
	PhaseChecks   Phase = "checks"
)

// Phases lists every Phase, for metrics that must exist at 0.
var Phases = []Phase{PhaseDownload, PhaseVerify, PhaseRestore, PhaseChecks}

// Scratch provides databases to restore into.
type Scratch interface {
	// Create makes an empty database that the drill owns, on a server whose
	// PostgreSQL major is at least the archive's pg_dump. It fails rather
	// than reuse a database that exists. The returned ScratchDB must be
	// closed, even when ctx is cancelled.
	Create(ctx context.Context, target string, info ArchiveInfo) (ScratchDB, error)
	// Location says where drills restore, for reports and logs: "embedded"
	// or "server host:port", never credentials.
	Location() string
}

// EarlyScratch is a Scratch whose database can be made before the archive's
// header is known, so that making it (an embedded cluster's initdb and start)
// overlaps the download. CheckArchive then refuses an archive the database's
// server cannot restore, as Create would have.
type EarlyScratch interface {
	Scratch
	CreateEarly(ctx context.Context, target string) (ScratchDB, error)
	CheckArchive(info ArchiveInfo) error
}

// ScratchDB is one database a drill created.
type ScratchDB interface {
	// Name is the database's name.
	Name() string
	// ServerVersion is the scratch server's version, e.g. "15.18".
	ServerVersion() string
	// Restore restores the archive at path into the database as a role
	// without superuser. Errors of TOC entries named in opt.AllowErrors are
	// tolerated and returned in the report; any other error fails.
	Restore(ctx context.Context, path string, info ArchiveInfo, opt RestoreOptions) (RestoreReport, error)
	// Query runs a read-only query returning one number (NULL: ok false),
	// under a statement timeout.
	Query(ctx context.Context, sql string, timeout time.Duration) (v float64, ok bool, err error)
	// Rows runs a read-only query and returns its rows as text (NULL: "").
	Rows(ctx context.Context, sql string, timeout time.Duration) ([][]string, error)
	// Close drops the database (WITH FORCE) and whatever was made for it;
	// it is idempotent and must work with a context that is still live
	// after the drill's own was cancelled.
	Close(ctx context.Context) error
}

// RestoreOptions tune a restore.
type RestoreOptions struct {
	Jobs        int
	AllowErrors []string
}

// RestoreReport says what a restore did.
type RestoreReport struct {
	Tool          string   `json:"tool"` // pg_restore or psql
	IgnoredErrors []string `json:"ignored_errors,omitempty"`
	Tables        int      `json:"tables"`
}

// Checker runs a target's integrity checks against a restored database.
type Checker interface {
	Run(ctx context.Context, db ScratchDB, backup DrillBackup, prev *DrillResult) []CheckResult
}

// CheckResult is the outcome of one integrity check.
type CheckResult struct {
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	Expected string   `json:"expected"`
	Actual   string   `json:"actual"`
	Value    *float64 `json:"value,omitempty"`
	OK       bool     `json:"ok"`
	Error    string   `json:"error,omitempty"`
	Seconds  Seconds  `json:"seconds"`
}

// PhaseResult is one phase of a drill.
type PhaseResult struct {
	Phase   Phase     `json:"phase"`
	Started time.Time `json:"started"`
	Seconds Seconds   `json:"seconds"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
}

// DrillBackup is the backup a drill restored.
type DrillBackup struct {
	Source       string      `json:"source"`
	Key          string      `json:"key"`
	ETag         string      `json:"etag,omitempty"`
	Size         int64       `json:"size"`
	LastModified time.Time   `json:"last_modified"`
	Created      time.Time   `json:"created"`
	SHA256       string      `json:"sha256,omitempty"`          // of the downloaded bytes
	Expected     string      `json:"expected_sha256,omitempty"` // from the checksum source
	ChecksumFrom string      `json:"checksum_from,omitempty"`
	Archive      ArchiveInfo `json:"archive"`
}

// DrillResult is the outcome of one restore drill.
type DrillResult struct {
	Target        string        `json:"target"`
	Started       time.Time     `json:"started"`
	Ended         time.Time     `json:"ended"`
	OK            bool          `json:"ok"`
	FailedPhase   Phase         `json:"failed_phase,omitempty"`
	Error         string        `json:"error,omitempty"`
	RTOSeconds    Seconds       `json:"rto_seconds"`
	RTOTarget     Seconds       `json:"rto_target_seconds"`
	RPOTarget     Seconds       `json:"rpo_target_seconds"`
	Backup        DrillBackup   `json:"backup"`
	Scratch       string        `json:"scratch"`
	Database      string        `json:"database,omitempty"`
	ServerVersion string        `json:"scratch_server_version,omitempty"`
	Jobs          int           `json:"jobs"`
	Phases        []PhaseResult `json:"phases"`
	Restore       RestoreReport `json:"restore"`
	Checks        []CheckResult `json:"checks"`
	Trigger       string        `json:"trigger"` // one of the Trigger values
	// Aborted: the drill was cancelled (shutdown) before it finished. It
	// is no verdict: not recorded as a drill, no report.
	Aborted bool `json:"aborted,omitempty"`
}

// Why a drill runs.
const (
	TriggerSchedule = "schedule"
	TriggerCatchUp  = "catch-up" // at start, the last drill being older than the interval
	TriggerAPI      = "api"
	TriggerCLI      = "cli"
)

// Phase returns the named phase's result, or nil.
func (r *DrillResult) Phase(p Phase) *PhaseResult {
	for i := range r.Phases {
		if r.Phases[i].Phase == p {
			return &r.Phases[i]
		}
	}
	return nil
}

// Driller runs restore drills of one target.
type Driller struct {
	target   Target
	src      Source
	archive  ArchiveReader
	scratch  Scratch
	checker  Checker
	stateDir string
	log      *slog.Logger
	now      func() time.Time

	// OnSaveError, if set, is called each time the state file cannot be
	// written (the daemon counts them).
	OnSaveError func()
	// ChecksumPredates, if set, is the watch loop's knowledge that a
	// backup's checksum file verified the object it replaced in place
	// (Watcher.ChecksumPredates).
	ChecksumPredates func(Backup) bool
	// Sleep, if set, replaces the wait between listings while the only
	// backups there are are still being written (see waitWhileWritten).
	Sleep func(ctx context.Context, d time.Duration) error

	*drillMem
}

// drillMem is what a target's Driller knows of its drills. A reload that
// changes the target replaces the Driller but hands this on (Continue), so a
// drill still running under the old Driller is seen by the new one and its
// counters do not restart at 0.
type drillMem struct {
	mu          sync.Mutex
	last        *DrillResult // persisted
	lastOK      *DrillResult // persisted
	lastChecked *DrillResult // persisted: the last drill that ran its checks
	total       uint64
	aborted     uint64
	failures    map[Phase]uint64
	running     bool
}

// Continue makes d carry on from old, the Driller it replaces on a reload:
// the same drills, counters and in-progress flag. Call it before d is used.
func (d *Driller) Continue(old *Driller) { d.drillMem = old.drillMem }

// NewDriller loads the target's last drills from stateDir.
func NewDriller(t Target, src Source, ar ArchiveReader, sc Scratch, ck Checker, stateDir string, log *slog.Logger, now func() time.Time) *Driller {
	d := &Driller{target: t, src: src, archive: ar, scratch: sc, checker: ck, stateDir: stateDir,
		log: log.With("target", t.Name), now: now, drillMem: &drillMem{failures: map[Phase]uint64{}}}
	for _, p := range Phases {
		d.failures[p] = 0
	}
	var st drillState
	if b, err := os.ReadFile(d.stateFile()); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			d.log.Warn("drill state unreadable; starting afresh", "file", d.stateFile(), "err", err)
		}
	}
	d.last, d.lastOK, d.lastChecked = st.Last, st.LastOK, st.LastChecked
	if d.lastChecked == nil && d.last != nil && d.last.Phase(PhaseChecks) != nil {
		d.lastChecked = d.last // a state file from before LastChecked was kept
	}
	return d
}

type drillState struct {
	Last        *DrillResult `json:"last,omitempty"`
	LastOK      *DrillResult `json:"last_ok,omitempty"`
	LastChecked *DrillResult `json:"last_checked,omitempty"`
}

// LoadDrills reads the last and the last passing drill of a target from
// state_dir, as the daemon recorded them (nil, nil when it has none).
func LoadDrills(stateDir, target string) (last, lastOK *DrillResult, err error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "targets", target, "drill.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var st drillState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", target, err)
	}
	return st.Last, st.LastOK, nil
}

func (d *Driller) stateFile() string {
	return filepath.Join(d.stateDir, "targets", d.target.Name, "drill.json")
}

// Name returns the target's name.
func (d *Driller) Name() string { return d.target.Name }

// DrillStatus is a snapshot of a target's drills.
type DrillStatus struct {
	Last   *DrillResult
	LastOK *DrillResult
	// LastChecked is the last drill that ran its checks: check_ok and
	// check_value describe it, not an older pass.
	LastChecked *DrillResult
	Total       uint64
	Aborted     uint64
	Failures    map[Phase]uint64
	InProgress  bool
}

// Status returns a snapshot.
func (d *Driller) Status() DrillStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := DrillStatus{Last: d.last, LastOK: d.lastOK, LastChecked: d.lastChecked, Total: d.total, Aborted: d.aborted,
		InProgress: d.running, Failures: make(map[Phase]uint64, len(d.failures))}
	for k, v := range d.failures {
		s.Failures[k] = v
	}
	return s
}

// TempDir is where drills download; it is emptied at start-up.
func TempDir(stateDir string) string { return filepath.Join(stateDir, "tmp") }

// Run performs one drill under the target's drill.timeout: download the
// newest backup, verify it, restore it into a scratch database, run the
// checks, drop the database. Its files are always removed. The wall time
// from download start to checks passed is the RTO.
func (d *Driller) Run(ctx context.Context, trigger string) DrillResult {
	d.mu.Lock()
	d.running = true
	prev := d.lastOK
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running = false
		d.mu.Unlock()
	}()

	listed := d.waitWhileWritten(ctx)
	parent := ctx
	timeout := d.target.Drill.Timeout
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("drill timed out after %s", timeout))
	defer cancel()
	r := DrillResult{Target: d.target.Name, Started: d.now(), Scratch: d.scratch.Location(), Jobs: d.target.Drill.Jobs,
		RTOTarget: secondsOf(d.target.RTO), RPOTarget: secondsOf(d.target.RPO), Trigger: trigger,
		Backup: DrillBackup{Source: d.src.String()}}
	d.log.Info("drill starting", "trigger", trigger)

	tmp := filepath.Join(TempDir(d.stateDir), fmt.Sprintf("%s-%d", d.target.Name, r.Started.UnixNano()))
	defer func() {
		if err := os.RemoveAll(tmp); err != nil {
			d.log.Warn("remove drill files", "dir", tmp, "err", err)
		}
	}()

	var (
		file     string
		verified Result
		db       ScratchDB
	)
	// An embedded cluster is made and started while the backup downloads.
	early, earlyCancel := d.createEarly(ctx)
	defer func() {
		if early != nil {
			if db == nil {
				earlyCancel() // the drill ended before the restore: not needed
			}
			if e := <-early; db == nil {
				db = e.db
			}
		}
		earlyCancel()
		if db == nil {
			return
		}
		// The drill's context may be cancelled: drop with a fresh deadline.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer ccancel()
		defer func() {
			if v := recover(); v != nil {
				d.log.Error("drop scratch database panicked", "database", db.Name(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}()
		if err := db.Close(cctx); err != nil {
			d.log.Error("drop scratch database failed", "database", db.Name(), "err", err)
		}
	}()

	phases := []struct {
		p  Phase
		fn func(ctx context.Context) error
	}{
		// One pass, as the watch loop's: the copy on disk is hashed and its
		// archive read while it is written.
		{PhaseDownload, func(ctx context.Context) (err error) {
			file, verified, err = d.download(ctx, tmp, &r.Backup, listed)
			return err
		}},
		{PhaseVerify, func(ctx context.Context) error {
			if !verified.OK {
				return fmt.Errorf("%s: %s", verified.Reason, verified.Error)
			}
			return nil
		}},
		{PhaseRestore, func(ctx context.Context) (err error) {
			if early != nil {
				e := <-early
				early = nil
				if e.err != nil {
					return e.err
				}
				db = e.db
				err = d.scratch.(EarlyScratch).CheckArchive(r.Backup.Archive)
			} else {
				db, err = d.scratch.Create(ctx, d.target.Name, r.Backup.Archive)
			}
			if err != nil {
				return err
			}
			r.Database, r.ServerVersion = db.Name(), db.ServerVersion()
			r.Restore, err = db.Restore(ctx, file, r.Backup.Archive,
				RestoreOptions{Jobs: d.target.Drill.Jobs, AllowErrors: d.target.Drill.AllowErrors})
			if err != nil && verified.Reader == "" && ctx.Err() == nil {
				// The archive was not read before the restore: was it the
				// archive that failed?
				if reader, aerr := ReadArchiveFile(ctx, file, d.archive); aerr != nil {
					err = unreadableError{fmt.Errorf("%s: %s (read by %s after the restore failed): %w", ReasonUnreadableArchive, r.Backup.Key, reader, aerr)}
				}
			}
			if rmErr := os.Remove(file); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
				d.log.Warn("remove downloaded backup", "file", file, "err", rmErr)
			}
			return err
		}},
		{PhaseChecks, func(ctx context.Context) error {
			if d.checker == nil {
				return nil
			}
			r.Checks = d.checker.Run(ctx, db, r.Backup, prev)
			var failed []string
			for _, c := range r.Checks {
				if !c.OK {
					failed = append(failed, c.Name)
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("%d of %d checks failed: %s", len(failed), len(r.Checks), strings.Join(failed, ", "))
			}
			return nil
		}},
	}
	for _, ph := range phases {
		pr := PhaseResult{Phase: ph.p, Started: d.now()}
		err := d.runPhase(ctx, ph.p, ph.fn)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (in phase %s)", context.Cause(ctx), ph.p)
		}
		pr.Seconds = secondsOf(d.now().Sub(pr.Started))
		pr.OK = err == nil
		if err != nil {
			pr.Error = err.Error()
		}
		r.Phases = append(r.Phases, pr)
		var unreadable unreadableError
		if errors.As(err, &unreadable) {
			// A broken archive is the backup's fault: the verify phase fails.
			if v := r.Phase(PhaseVerify); v != nil {
				v.OK, v.Error = false, err.Error()
			}
			r.FailedPhase, r.Error = PhaseVerify, err.Error()
			break
		}
		if err != nil {
			r.FailedPhase, r.Error = ph.p, err.Error()
			break
		}
	}
	r.Ended = d.now()
	r.OK = r.FailedPhase == ""
	if r.OK {
		r.RTOSeconds = secondsOf(r.Ended.Sub(r.Started))
	}
	if !r.OK && parent.Err() != nil {
		// Cancelled from outside (shutdown), not timed out: no verdict.
		r.Aborted = true
		d.mu.Lock()
		d.aborted++
		d.mu.Unlock()
		d.log.Warn("drill aborted; it is not counted as a drill", "phase", r.FailedPhase, "trigger", trigger)
		return r
	}
	d.record(r)
	return r
}

// runPhase runs one phase; a panic in it (a parser or driver bug met by a
// hostile backup) fails that phase, with its stack in the log, and the drill
// still cleans up after itself.
func (d *Driller) runPhase(ctx context.Context, p Phase, fn func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			d.log.Error("drill phase panicked", "phase", p, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error in phase %s: panic: %v", p, v)
		}
	}()
	return fn(ctx)
}

func (d *Driller) record(r DrillResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.total++
	rr := r
	d.last = &rr
	if r.Phase(PhaseChecks) != nil {
		d.lastChecked = &rr
	}
	if r.OK {
		d.lastOK = &rr
		d.log.Info("drill passed", "rto_seconds", float64(r.RTOSeconds), "key", r.Backup.Key)
	} else {
		d.failures[r.FailedPhase]++
		d.log.Error("drill failed", "phase", r.FailedPhase, "err", r.Error, "key", r.Backup.Key)
	}
	b, err := json.Marshal(drillState{Last: d.last, LastOK: d.lastOK, LastChecked: d.lastChecked})
	if err == nil {
		err = WriteFileAtomic(d.stateFile(), b)
	}
	if err != nil {
		d.log.Error("save drill state failed", "err", err)
		if d.OnSaveError != nil {
			d.OnSaveError()
		}
	}
}

// unreadableError is a restore failure whose archive, read afterwards, is broken.
type unreadableError struct{ error }

func (e unreadableError) Unwrap() error { return e.error }

type earlyDB struct {
	db  ScratchDB
	err error
}

// createEarly starts making the scratch database in the background when the
// scratch is an EarlyScratch; the channel yields it once.
func (d *Driller) createEarly(ctx context.Context) (chan earlyDB, context.CancelFunc) {
	es, ok := d.scratch.(EarlyScratch)
	if !ok {
		return nil, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan earlyDB, 1)
	go func() {
		db, err := es.CreateEarly(ctx, d.target.Name)
		ch <- earlyDB{db, err}
	}()
	return ch, cancel
}

// download copies the newest backup into dir while verifying it (Verify's
// one pass: sha256, the archive read to its end). It fails only when the
// backup could not be had (download_error); a backup that is had but fails
// verification fails the verify phase with the returned Result.
func (d *Driller) download(ctx context.Context, dir string, b *DrillBackup, listed []Object) (path string, r Result, err error) {
	objs := listed
	if objs == nil {
		if objs, err = d.src.List(ctx); err != nil {
			return "", r, fmt.Errorf("list %s: %w", d.src, err)
		}
	}
	backups := Discover(objs, &d.target, d.target.Match)
	if len(backups) == 0 {
		return "", r, fmt.Errorf("no backups matching %q in %s", d.target.Glob, d.src)
	}
	var nb Backup
	// A backup whose manifest or sidecar is not there yet, and that is
	// younger than backup_grace, may still be being written: drill the
	// newest complete one, as a person would.
	usesFiles := usesChecksumFiles(backups)
	first := 0 // all still being written: the newest, as before
	for i, b := range backups {
		if !d.checksumNotYet(b, usesFiles) {
			first = i
			break
		}
		d.log.Info("skipping a backup still being written", "key", b.Key)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", r, err
	}
	for i := first; i < len(backups); i++ {
		nb = backups[i]
		path = filepath.Join(dir, "backup"+archiveExt(nb.Key))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600) // read back by a download in parts
		if err != nil {
			return "", r, err
		}
		// Custom format: only the header now; the restore reads every block,
		// and a failed restore is told apart from a broken archive then.
		r, err = VerifyTo(ctx, d.src, d.archive, nb, d.target.ArchiveTZ, d.now, CopyOptions{To: f, HeaderOnly: true, Limits: d.target.Verify})
		if cerr := f.Close(); err == nil && cerr != nil && r.OK {
			r.OK, r.Reason, r.Error = false, ReasonDownloadError, fmt.Sprintf("write a copy of %s: %v", nb.Key, cerr)
		}
		if err != nil {
			return "", r, err // cancelled
		}
		// The watcher's rule, so that a drill never fails a backup the
		// watch loop is still waiting for: drill the one before it.
		if !r.OK && i+1 < len(backups) && stillBeingWritten(nb, r, d.ChecksumPredates != nil && d.ChecksumPredates(nb), d.target.BackupGrace, d.now()) {
			d.log.Info("skipping a backup still being written", "key", nb.Key, "reason", r.Reason)
			_ = os.Remove(path)
			continue
		}
		break
	}
	b.Key, b.ETag, b.Size, b.LastModified = nb.Key, nb.ETag, nb.Size, nb.LastModified
	if r.Stack != "" {
		d.log.Error("verification panicked", "key", r.Key, "err", r.Error, "stack", r.Stack)
	}
	b.SHA256, b.Expected, b.ChecksumFrom, b.Archive, b.Created = r.SHA256, r.Expected, r.ChecksumFrom, r.Archive, r.Created
	if r.Reason == ReasonDownloadError {
		return "", r, errors.New(r.Error)
	}
	return path, r, nil
}

// usesChecksumFiles says whether a layout comes with checksum files (in
// auto mode, a backup without one is then waited for).
func usesChecksumFiles(backups []Backup) bool {
	for _, b := range backups {
		if b.ChecksumKey != "" {
			return true
		}
	}
	return false
}

// checksumNotYet: the backup's manifest or sidecar is not there yet and the
// backup is younger than backup_grace.
func (d *Driller) checksumNotYet(b Backup, usesFiles bool) bool {
	expectsFile := b.ChecksumKind == ChecksumManifest || b.ChecksumKind == ChecksumSidecar ||
		d.target.Checksum == ChecksumAuto && usesFiles
	return expectsFile && b.ChecksumKey == "" && d.now().Sub(b.LastModified) < d.target.BackupGrace
}

// waitWhileWritten holds a drill back, before its clock starts, while every
// backup listed looks still being written: its checksum file not there yet,
// or older than the dump (a latest/ backup replaced in place before its
// manifest), and the dump younger than backup_grace. With an older complete
// backup the drill restores that one (download); with none, it would restore
// a backup halfway through its upload and fail, and page for a backup job
// that was only running. It lists again every poll (at most), and stops
// waiting when a checksum file catches up, the grace ends (the drill then
// gives its verdict), the listing fails or takes longer than drill.timeout
// (the download says why) or ctx ends. Whatever the listing says (a dump
// dated ahead of our clock, a latest/ dump uploaded again every poll and
// never given its checksum file), it waits at most backup_grace in all: a
// drill that never starts would give no verdict, and hold its
// drills.max_concurrent slot, for ever.
//
// It returns the listing it last acted on, which the download uses rather
// than listing again; nil when the listing failed.
func (d *Driller) waitWhileWritten(ctx context.Context) []Object {
	end := d.now().Add(d.target.BackupGrace)
	for waited := false; ; waited = true {
		lctx, cancel := context.WithTimeout(ctx, d.target.Drill.Timeout)
		objs, err := d.src.List(lctx)
		cancel()
		if err != nil {
			return nil
		}
		backups := Discover(objs, &d.target, d.target.Match)
		if len(backups) == 0 {
			return objs
		}
		usesFiles := usesChecksumFiles(backups)
		for _, b := range backups {
			stale := b.ChecksumKey != "" && d.now().Sub(b.LastModified) < d.target.BackupGrace &&
				(b.ChecksumModified.Before(b.LastModified) || d.ChecksumPredates != nil && d.ChecksumPredates(b))
			if !stale && !d.checksumNotYet(b, usesFiles) {
				if waited {
					d.log.Info("the backup is complete; the drill starts", "key", backups[0].Key)
				}
				return objs
			}
		}
		left := min(d.target.BackupGrace-d.now().Sub(backups[0].LastModified), end.Sub(d.now()))
		if left <= 0 {
			d.log.Warn("the backup still looks written after backup_grace; the drill starts", "key", backups[0].Key)
			return objs
		}
		if !waited {
			d.log.Info("waiting for the backup still being written before the drill starts", "key", backups[0].Key,
				"at_most", left.Round(time.Second).String())
		}
		sleep := d.Sleep
		if sleep == nil {
			sleep = sleepCtx
		}
		if sleep(ctx, max(min(left, d.target.Poll), time.Second)) != nil {
			return nil
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func archiveExt(key string) string {
	switch {
	case strings.HasSuffix(key, ".sql.gz"):
		return ".sql.gz"
	case strings.HasSuffix(key, ".sql"):
		return ".sql"
	}
	return ".dump"
}
