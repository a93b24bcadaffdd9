package verifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/backupverify/backupverify/scheduler"
)

// Backup statuses in the catalogue.
const (
	StatusVerified = "verified"
	StatusFailed   = "failed"
	// StatusSkipped marks a backup catalogued without being read: on a first
	// start only the newest verify_last backups are verified.
	StatusSkipped = "skipped"
)

// Record is what the catalogue remembers of one backup version.
type Record struct {
	Key          string    `json:"key"`
	ETag         string    `json:"etag"`
	Size         int64     `json:"size"`
	LastModified time.Time `json:"last_modified"`
	Created      time.Time `json:"created"`
	Status       string    `json:"status"`
	Reason       Reason    `json:"reason,omitempty"`
	// Checksum is the ETag of the manifest or sidecar the verdict was
	// reached with; "" when there was none (or checksum: s3 or none).
	Checksum string `json:"checksum,omitempty"`
	// SHA256 is the sha256 of the bytes read, kept for a failed backup
	// ("" when it was not read): a checksum file that changes is only worth
	// another download when it gives this sum.
	SHA256 string `json:"sha256,omitempty"`
}

// watchState is persisted per target so that a restart neither re-verifies
// what was verified nor forgets the newest verified backup.
type watchState struct {
	Version   int                `json:"version"`
	Catalogue map[string]*Record `json:"catalogue"` // by Backup.ID
	// LastVerified is the newest backup (by creation time) that passed.
	LastVerified *Result `json:"last_verified,omitempty"`
	// LastResult is the newest backup's latest completed verification.
	LastResult *Result `json:"last_result,omitempty"`
	// Since is when watching began: the reference for a missed first backup.
	Since time.Time `json:"since"`
	// ScanLastOK survives restarts so that "not listed for 15m" stays true.
	ScanLastOK time.Time `json:"scan_last_ok,omitzero"`
	// Replaced holds, by key, the ETag of the checksum file that verified
	// an object since replaced in place, until its new version has a
	// verdict: that file still being listed means it predates the new
	// version, even when S3 lists both in the same second.
	Replaced map[string]string `json:"replaced,omitempty"`
}

// Status is a snapshot of one target's watch loop, for metrics and pages.
type Status struct {
	Target        string
	RPOTarget     time.Duration
	Source        string
	Newest        *Record // newest backup seen; nil when none
	LastResult    *Result // newest completed verification of the newest backup
	LastVerified  *Result // newest backup that passed
	Missed        bool
	NextBackupDue time.Time
	VerifiedTotal uint64
	Failures      map[Reason]uint64
	ScanLastOK    time.Time
	ScanErrors    uint64
	ScanLastError string
	Catalogued    int
	// DownloadFailing: the newest backup is unverified because its last
	// download attempt failed; it is retried with backoff.
	DownloadFailing bool
	DownloadError   string // the last failed download's error, while failing
	// Since is when this daemon first watched the target (persisted).
	Since time.Time
	// Present is the number of backups in the last listing, Oldest the
	// oldest one's time (zero when none).
	Present int
	Oldest  time.Time

	// Drill side, filled by the daemon from the Driller and the scheduler.
	RTOTarget     time.Duration
	Drill         DrillStatus
	NextDrill     time.Time
	DrillInterval time.Duration
}

// Watcher runs the watch loop of one target.
type Watcher struct {
	target  Target
	src     Source
	archive ArchiveReader
	log     *slog.Logger
	now     func() time.Time
	match   *regexp.Regexp
	sched   cron.Schedule // nil without backup_schedule
	plan    scheduler.Poll
	gate    Gate
	file    string // state file
	// spillDir is where the native reader may park compressed data
	// (state_dir/tmp).
	spillDir string

	mu       sync.Mutex
	st       watchState
	newest   *Record
	verified uint64
	failures map[Reason]uint64
	scanOK   time.Time
	scanErrs uint64
	scanErr  string
	// retry holds the backups whose download failed, by Backup.ID: a
	// download error is no verdict, so they are read again after a backoff.
	retry map[string]*retryState
	// present and oldest describe the last listing: how many backups exist,
	// and the oldest one's time.
	present int
	oldest  time.Time
	// OnSaveError, if set, is called each time the state file cannot be
	// written (the daemon counts them).
	OnSaveError func()
}

// retryState is the backoff of one backup whose download failed.
type retryState struct {
	attempts int
	next     time.Time
	err      string
}

// maxRetryWait caps the backoff between download attempts of one backup.
const maxRetryWait = time.Hour

// retryWait is the wait after the n-th failed download in a row: one poll,
// then two, four... at most maxRetryWait.
func retryWait(poll time.Duration, n int) time.Duration {
	d := poll
	for i := 1; i < n && d < maxRetryWait; i++ {
		d *= 2
	}
	return min(d, maxRetryWait)
}

// Gate bounds how many verifications run at once, across every watcher that
// shares it: a daemon starting with a thousand targets reads a few backups
// at a time, not a thousand. A nil Gate bounds nothing.
type Gate chan struct{}

// NewGate lets n verifications run at once; n < 1 means twice the CPUs.
func NewGate(n int) Gate {
	if n < 1 {
		n = 2 * runtime.NumCPU()
	}
	return make(Gate, n)
}

func (g Gate) enter(ctx context.Context) bool {
	if g == nil {
		return true
	}
	select {
	case g <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g Gate) leave() {
	if g != nil {
		<-g
	}
}

// NewWatcher loads the target's state from stateDir and returns its watcher.
// Its verifications pass through gate.
func NewWatcher(t Target, src Source, ar ArchiveReader, gate Gate, stateDir string, log *slog.Logger, now func() time.Time) (*Watcher, error) {
	w := &Watcher{
		target: t, src: src, archive: ar, gate: gate, now: now, match: t.Match,
		log:      log.With("target", t.Name),
		file:     filepath.Join(stateDir, "targets", t.Name, "watch.json"),
		spillDir: TempDir(stateDir),
		failures: map[Reason]uint64{},
		retry:    map[string]*retryState{},
	}
	for _, r := range Reasons {
		w.failures[r] = 0
	}
	if t.BackupSchedule != "" {
		var err error
		if w.sched, err = cron.ParseStandard(t.BackupSchedule); err != nil {
			return nil, fmt.Errorf("backup_schedule: %w", err)
		}
	}
	w.plan = scheduler.NewPoll(t.Name, t.Poll, w.sched, dueSettle)
	if err := w.load(); err != nil {
		return nil, err
	}
	return w, nil
}

// Continue makes w carry on from old, the Watcher it replaces on a reload,
// once old's loop has stopped: the state old saved last is read again and
// the counters go on from old's, so a reload never resets a counter.
func (w *Watcher) Continue(old *Watcher) error {
	old.mu.Lock()
	verified, scanErrs, scanErr := old.verified, old.scanErrs, old.scanErr
	retry, present, oldest := old.retry, old.present, old.oldest // old's loop has stopped: w takes them over
	failures := make(map[Reason]uint64, len(old.failures))
	for k, v := range old.failures {
		failures[k] = v
	}
	old.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.load(); err != nil {
		return err
	}
	w.verified, w.scanErrs, w.scanErr, w.failures = verified, scanErrs, scanErr, failures
	w.retry, w.present, w.oldest = retry, present, oldest
	return nil
}

// Name returns the target's name.
func (w *Watcher) Name() string { return w.target.Name }

func (w *Watcher) load() error {
	b, err := os.ReadFile(w.file)
	if errors.Is(err, fs.ErrNotExist) {
		w.st = watchState{Version: 1, Catalogue: map[string]*Record{}, Replaced: map[string]string{}, Since: w.now()}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(b, &w.st); err != nil {
		// A broken state file loses only the catalogue: the next scan
		// re-verifies the newest backup. Keep the broken file for a look.
		w.log.Warn("state file unreadable; starting afresh", "file", w.file, "err", err)
		_ = os.Rename(w.file, w.file+".broken")
		w.st = watchState{Version: 1, Catalogue: map[string]*Record{}, Replaced: map[string]string{}, Since: w.now()}
		return nil
	}
	if w.st.Catalogue == nil {
		w.st.Catalogue = map[string]*Record{}
	}
	if w.st.Replaced == nil {
		w.st.Replaced = map[string]string{}
	}
	if w.st.Since.IsZero() { // a state file from before Since was kept
		w.st.Since = w.now()
	}
	w.scanOK = w.st.ScanLastOK
	if w.st.LastResult != nil {
		w.newest = &Record{Key: w.st.LastResult.Key, ETag: w.st.LastResult.ETag, Size: w.st.LastResult.Size,
			LastModified: w.st.LastResult.LastModified, Created: w.st.LastResult.Created}
	}
	return nil
}

func (w *Watcher) save() error {
	b, err := json.Marshal(&w.st)
	if err != nil {
		return err
	}
	return WriteFileAtomic(w.file, b)
}

// WriteFileAtomic writes a file through a temporary file and a rename, so a
// crash leaves the old content or the new, never half of it.
func WriteFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// dueSettle is how long after a scheduled backup time the loop looks again.
const dueSettle = 5 * time.Second

// Run scans at once, then every poll at the target's own phase within it,
// and just after each time the backup schedule says a backup is due, until
// ctx ends (scheduler.Poll plans it, scheduler.Loop runs it).
//
// The state is saved when the loop starts without a state file (so the
// time watching began survives a restart even while the source cannot be
// listed) and when it ends (so the last successful listing is exact).
func (w *Watcher) Run(ctx context.Context) error {
	if _, err := os.Stat(w.file); errors.Is(err, fs.ErrNotExist) {
		w.persist()
	}
	defer w.persist()
	scheduler.Loop(ctx, w.now, w.plan.Next, w.Scan)
	return nil
}

// persist saves the state with the last successful listing.
func (w *Watcher) persist() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.scanOK.After(w.st.ScanLastOK) {
		w.st.ScanLastOK = w.scanOK
	}
	if err := w.save(); err != nil {
		w.saveFailed(err)
	}
}

// Scan lists the source once and verifies the backups not seen before,
// newest first. On a first start (empty catalogue) only the newest
// verify_last are verified; the others are catalogued unread.
func (w *Watcher) Scan(ctx context.Context) {
	objs, err := w.src.List(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		w.mu.Lock()
		w.scanErrs++
		w.scanErr = err.Error()
		w.mu.Unlock()
		w.log.Error("list source failed", "source", w.src.String(), "err", err)
		return
	}
	backups := Discover(objs, &w.target, w.match)

	w.mu.Lock()
	w.scanOK = w.now()
	w.scanErr = ""
	// Saved with the next change, or at least every 10 minutes.
	stale := w.scanOK.Sub(w.st.ScanLastOK) > 10*time.Minute
	w.st.ScanLastOK = w.scanOK
	cold := len(w.st.Catalogue) == 0
	changed := false
	live := make(map[string]bool, len(backups))
	liveKey := make(map[string]bool, len(backups))
	var todo, recheck []Backup
	for i, b := range backups {
		live[b.ID()], liveKey[b.Key] = true, true
		if rec, seen := w.st.Catalogue[b.ID()]; seen {
			switch {
			case sumChanged(rec, b):
				if !w.backingOff(b) {
					recheck = append(recheck, b)
				}
			case rec.Status == StatusVerified && rec.Checksum == "" && b.ChecksumETag != "":
				// Verified by a version that did not record the file.
				rec.Checksum = b.ChecksumETag
				changed = true
			}
			continue
		}
		if w.backingOff(b) {
			continue
		}
		if cold && i >= w.target.VerifyLast {
			w.st.Catalogue[b.ID()] = &Record{Key: b.Key, ETag: b.ETag, Size: b.Size,
				LastModified: b.LastModified, Created: b.LastModified, Status: StatusSkipped}
			continue
		}
		todo = append(todo, b)
	}
	changed = changed || len(todo) > 0 || cold && len(backups) > 0 || stale
	for id, rec := range w.st.Catalogue {
		if !live[id] {
			if liveKey[rec.Key] && rec.Status == StatusVerified && rec.Checksum != "" {
				w.st.Replaced[rec.Key] = rec.Checksum
			}
			delete(w.st.Catalogue, id)
			changed = true
		}
	}
	for key := range w.st.Replaced {
		if !liveKey[key] {
			delete(w.st.Replaced, key)
			changed = true
		}
	}
	for id := range w.retry {
		if !live[id] {
			delete(w.retry, id)
		}
	}
	// A deleted backup no longer protects anything: the verified time and
	// the checksum verdict fall back to the newest backup still present.
	if lv := w.st.LastVerified; lv != nil && !live[lv.Key+"@"+lv.ETag] {
		w.st.LastVerified = w.newestRecorded(func(r *Record) bool { return r.Status == StatusVerified })
		changed = true
		w.log.Warn("the newest verified backup was deleted from the source", "key", lv.Key)
	}
	// An object replaced in place (same key, new ETag) keeps its verdict
	// until its new version has one: it is the same backup being rewritten.
	if lr := w.st.LastResult; lr != nil && !live[lr.Key+"@"+lr.ETag] && !liveKey[lr.Key] {
		w.st.LastResult = w.newestRecorded(func(r *Record) bool { return r.Status == StatusVerified || r.Status == StatusFailed })
		changed = true
	}
	w.present, w.oldest = len(backups), time.Time{}
	if n := len(backups); n > 0 {
		w.oldest = backups[n-1].LastModified
		if rec, ok := w.st.Catalogue[backups[n-1].ID()]; ok && !rec.Created.IsZero() {
			w.oldest = rec.Created
		}
	}
	w.newest = nil
	if len(backups) > 0 {
		if rec, ok := w.st.Catalogue[backups[0].ID()]; ok {
			w.newest = rec
		} else {
			b := backups[0]
			w.newest = &Record{Key: b.Key, ETag: b.ETag, Size: b.Size, LastModified: b.LastModified, Created: b.LastModified}
		}
	}
	if cold && len(backups) > len(todo) {
		w.log.Info("first scan: catalogued older backups without reading them",
			"catalogued", len(backups)-len(todo), "verifying", len(todo))
	}
	w.mu.Unlock()

	for _, b := range recheck {
		if ctx.Err() != nil {
			return
		}
		if w.sumChangedFor(ctx, b) {
			w.log.Info("the checksum file now says something else of a backup that failed; verifying it again",
				"key", b.Key, "checksum_file", b.ChecksumKey)
			todo = append(todo, b)
		} else {
			changed = true
		}
	}
	for _, b := range todo {
		if ctx.Err() != nil {
			return
		}
		w.verifyOne(ctx, b, b.ID() == backups[0].ID())
	}
	if changed {
		w.mu.Lock()
		err := w.save()
		w.mu.Unlock()
		if err != nil {
			w.saveFailed(err)
		}
	}
}

func (w *Watcher) saveFailed(err error) {
	w.log.Error("save state failed", "file", w.file, "err", err)
	if w.OnSaveError != nil {
		w.OnSaveError()
	}
}

// newestRecorded is the newest catalogued backup that keep accepts, as a
// Result, or nil.
func (w *Watcher) newestRecorded(keep func(*Record) bool) *Result {
	var best *Record
	for _, r := range w.st.Catalogue {
		if keep(r) && (best == nil || r.Created.After(best.Created)) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	return &Result{Key: best.Key, ETag: best.ETag, Size: best.Size, LastModified: best.LastModified,
		Created: best.Created, OK: best.Status == StatusVerified, Reason: best.Reason}
}

// sumChanged says whether a backup that failed for its checksum is listed
// with a checksum file other than the one it was judged with (a manifest
// written late, corrected, or rewritten for another backup of its folder).
func sumChanged(rec *Record, b Backup) bool {
	return rec.Status == StatusFailed && (rec.Reason == ReasonMismatch || rec.Reason == ReasonMissingChecksum) &&
		b.ChecksumKey != "" && b.ChecksumETag != rec.Checksum
}

// backingOff says whether b's last download failed and its backoff has
// not run out yet.
func (w *Watcher) backingOff(b Backup) bool {
	rs := w.retry[b.ID()]
	return rs != nil && w.scanOK.Before(rs.next)
}

// sumChangedFor reads the changed checksum file of a failed backup (a
// small read) and says whether the backup is worth reading again: the file
// now gives the sum its bytes had when read (or, never read, any sum).
// Otherwise the verdict stands and the record takes the file's new ETag:
// a manifest rewritten for other backups of a folder, or flipped between
// wrong sums, costs one small read, never a download.
func (w *Watcher) sumChangedFor(ctx context.Context, b Backup) bool {
	sum, _, err := expectedChecksum(ctx, w.src, b)
	missing := errors.Is(err, errMissingChecksum)
	if err != nil && !missing {
		w.log.Warn("read checksum file failed; will look again", "key", b.Key, "checksum_file", b.ChecksumKey, "err", err)
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	rec := w.st.Catalogue[b.ID()]
	if rec == nil {
		return false
	}
	reread := !missing && (rec.SHA256 == "" || strings.EqualFold(sum, rec.SHA256))
	if !reread {
		rec.Checksum = b.ChecksumETag
	}
	return reread
}

// pending says whether a failure may only mean the backup is still being
// written (stillBeingWritten); such a backup is tried again next scan.
func (w *Watcher) pending(b Backup, r Result) bool {
	return stillBeingWritten(b, r, w.predates(b), w.target.BackupGrace, w.now())
}

// ChecksumPredates says whether b's checksum file is the one that verified
// the object b replaced in place, and so older than b whatever the listed
// times say. The driller asks, so that a drill never fails a backup the
// watch loop is still waiting for.
func (w *Watcher) ChecksumPredates(b Backup) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.predates(b)
}

func (w *Watcher) predates(b Backup) bool {
	return b.ChecksumETag != "" && w.st.Replaced[b.Key] == b.ChecksumETag
}

// stillBeingWritten says whether a failed verification may only mean the
// backup is still being written: its checksum file is missing or older than
// the dump (oldSum: known to be older), and the dump is younger than
// backup_grace. The watch loop waits for such a backup; a drill restores
// the one before it.
func stillBeingWritten(b Backup, r Result, oldSum bool, grace time.Duration, now time.Time) bool {
	young := now.Sub(b.LastModified) < grace
	switch r.Reason {
	case ReasonMissingChecksum:
		return young
	case ReasonMismatch:
		return young && b.ChecksumKey != "" && (oldSum || b.ChecksumModified.Before(b.LastModified))
	}
	return false
}

func (w *Watcher) verifyOne(ctx context.Context, b Backup, newest bool) {
	if !w.gate.enter(ctx) {
		return
	}
	w.log.Info("verifying backup", "key", b.Key, "size", b.Size, "checksum", b.ChecksumKind)
	r, err := VerifyTo(ctx, w.src, w.archive, b, w.target.ArchiveTZ, w.now, CopyOptions{Limits: w.target.Verify, SpillDir: w.spillDir})
	w.gate.leave()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		return // cancelled: nothing was learnt
	}
	if !r.OK && w.pending(b, r) {
		w.log.Info("backup not complete yet; will look again", "key", b.Key, "reason", r.Reason, "err", r.Error)
		return
	}
	if r.Reason == ReasonDownloadError {
		// Not a verdict on the backup: count it, keep the last real
		// verdict, and read it again after a backoff.
		w.failures[r.Reason]++
		rs := w.retry[b.ID()]
		if rs == nil {
			rs = &retryState{}
			w.retry[b.ID()] = rs
		}
		rs.attempts++
		rs.err = r.Error
		wait := retryWait(w.target.Poll, rs.attempts)
		rs.next = w.now().Add(wait)
		w.log.Warn("backup download failed; will try again", "key", b.Key, "attempts", rs.attempts,
			"retry_in", wait.String(), "err", r.Error)
		return
	}
	delete(w.retry, b.ID())
	delete(w.st.Replaced, b.Key)
	rec := &Record{Key: b.Key, ETag: b.ETag, Size: b.Size, LastModified: b.LastModified, Created: r.Created,
		Checksum: b.ChecksumETag}
	if r.OK {
		rec.Status = StatusVerified
		w.verified++
		if w.st.LastVerified == nil || !r.Created.Before(w.st.LastVerified.Created) {
			rr := r
			w.st.LastVerified = &rr
		}
		if r.DatedInFuture {
			zone := "UTC"
			if w.target.ArchiveTZ != nil {
				zone = w.target.ArchiveTZ.String()
			}
			w.log.Warn("the archive header's time is later than the backup's upload; using the upload time "+
				"(is archive_timezone right?)", "key", b.Key, "header_time", r.Archive.Created,
				"last_modified", r.LastModified, "archive_timezone", zone, "likely_offset", r.LikelyOffset(w.target.ArchiveTZ))
		}
		w.log.Info("backup verified", "key", b.Key, "sha256", r.SHA256, "created", r.Created,
			"bytes", r.BytesRead, "seconds", float64(r.Duration))
	} else {
		rec.Status, rec.Reason, rec.SHA256 = StatusFailed, r.Reason, r.SHA256
		w.failures[r.Reason]++
		if r.Stack != "" {
			w.log.Error("backup failed verification", "key", b.Key, "reason", r.Reason, "err", r.Error, "stack", r.Stack)
		} else {
			w.log.Error("backup failed verification", "key", b.Key, "reason", r.Reason, "err", r.Error)
		}
	}
	w.st.Catalogue[b.ID()] = rec
	if newest {
		rr := r
		w.st.LastResult = &rr
		w.newest = rec
	}
}

// VerifyNewest verifies the newest backup now, without touching the
// watcher's state: the one-shot `backupverify verify`.
func (w *Watcher) VerifyNewest(ctx context.Context) (Result, error) {
	objs, err := w.src.List(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("list %s: %w", w.src, err)
	}
	backups := Discover(objs, &w.target, w.match)
	if len(backups) == 0 {
		return Result{}, fmt.Errorf("no backups matching %q in %s", w.target.Glob, w.src)
	}
	r, err := VerifyTo(ctx, w.src, w.archive, backups[0], w.target.ArchiveTZ, w.now, CopyOptions{Limits: w.target.Verify, SpillDir: w.spillDir})
	if r.Stack != "" {
		w.log.Error("verification panicked", "key", r.Key, "err", r.Error, "stack", r.Stack)
	}
	return r, err
}

// Status returns a snapshot; Missed is computed against the clock now.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Status{
		Target: w.target.Name, RPOTarget: w.target.RPO, RTOTarget: w.target.RTO, Source: w.src.String(),
		VerifiedTotal: w.verified, ScanLastOK: w.scanOK, ScanErrors: w.scanErrs, ScanLastError: w.scanErr,
		Catalogued: len(w.st.Catalogue),
		Failures:   make(map[Reason]uint64, len(w.failures)),
		Since:      w.st.Since, Present: w.present, Oldest: w.oldest,
	}
	for k, v := range w.failures {
		s.Failures[k] = v
	}
	if w.newest != nil {
		n := *w.newest
		s.Newest = &n
		if rs := w.retry[n.Key+"@"+n.ETag]; rs != nil {
			s.DownloadFailing, s.DownloadError = true, rs.err
		}
	}
	if w.st.LastResult != nil {
		r := *w.st.LastResult
		s.LastResult = &r
	}
	if w.st.LastVerified != nil {
		r := *w.st.LastVerified
		s.LastVerified = &r
	}
	if w.sched != nil {
		ref := w.st.Since
		if s.Newest != nil {
			ref = s.Newest.Created
		}
		s.NextBackupDue, s.Missed = missed(w.sched, ref, w.target.BackupGrace, w.now())
	}
	return s
}

// BackupAge is how old a backup created at created is at at, never below 0:
// the one definition of RPO, used by the metrics, the status page and the
// drill reports.
func BackupAge(created, at time.Time) time.Duration {
	return max(0, at.Sub(created))
}

// RPO is the recovery point objective actually met at now: the age of the
// newest verified backup still present; ok is false when there is none.
func (s Status) RPO(now time.Time) (rpo time.Duration, ok bool) {
	if s.LastVerified == nil {
		return 0, false
	}
	return BackupAge(s.LastVerified.Created, now), true
}

// missed says whether a backup due by the schedule after ref has not appeared
// within grace. A backup a little early for its slot still counts for it.
func missed(sched cron.Schedule, ref time.Time, grace time.Duration, now time.Time) (due time.Time, late bool) {
	slack := min(grace, time.Minute)
	due = sched.Next(ref.Add(slack))
	return due, !now.Before(due.Add(grace))
}
