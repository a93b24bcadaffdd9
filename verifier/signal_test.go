package verifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// flakySource fails Open of the named keys while fail[key] > 0.
type flakySource struct {
	*memSource
	fail map[string]int
}

func (f *flakySource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if f.fail[key] > 0 {
		f.fail[key]--
		f.memSource.opens++
		return nil, errors.New("503 Service Unavailable")
	}
	return f.memSource.Open(ctx, key)
}

func newMem() *memSource {
	return &memSource{objs: map[string][]byte{}, mod: map[string]time.Time{}, sums: map[string]string{}}
}

func (m *memSource) put(key string, body []byte, mod time.Time) {
	m.objs[key], m.mod[key], m.sums[key] = body, mod, hexsum(body)
}

func sqlDumpAt(t time.Time) []byte {
	return []byte(regexp.MustCompile(`Started on [0-9: -]+ UTC`).ReplaceAllString(plainDump,
		"Started on "+t.UTC().Format("2006-01-02 15:04:05")+" UTC"))
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func sqlTarget() Target {
	return Target{Name: "t", Glob: "*.sql", Match: regexp.MustCompile(`^[^/]*\.sql$`), Checksum: "s3", Manifest: "CHECKSUM",
		VerifyLast: 2, Poll: time.Minute, BackupGrace: time.Minute, RPO: time.Hour}
}

// TestDownloadErrorIsRetriedWithBackoff: a backup whose download fails is
// not failed: it is read again after one poll, then two, four...; each
// failure is counted; checksum_ok keeps the last real verdict; the newest
// backup is flagged as failing to download until a read succeeds.
func TestDownloadErrorIsRetriedWithBackoff(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	clock := t0.Add(10 * time.Minute)
	now := func() time.Time { return clock }
	mem := newMem()
	mem.put("a.sql", sqlDumpAt(t0), t0)
	src := &flakySource{memSource: mem, fail: map[string]int{}}
	w, err := NewWatcher(sqlTarget(), src, noArchive{t}, nil, t.TempDir(), discard(), now)
	if err != nil {
		t.Fatal(err)
	}
	w.Scan(context.Background())
	if st := w.Status(); st.LastResult == nil || !st.LastResult.OK {
		t.Fatalf("a.sql: want verified, got %+v", st.LastResult)
	}
	// b.sql lands and S3 answers 503 to its first four reads.
	mem.put("b.sql", sqlDumpAt(t0.Add(5*time.Minute)), t0.Add(5*time.Minute))
	src.fail["b.sql"] = 4
	// Scans every poll (1m): reads expected after 0, 1, 2 (+2), 4 (+4), 8 (+8)... polls.
	wantReadAt := map[int]bool{0: true, 1: true, 3: true, 7: true, 15: true}
	opens := mem.opens
	for i := 0; i <= 16; i++ {
		w.Scan(context.Background())
		read := mem.opens > opens
		opens = mem.opens
		if read != wantReadAt[i] {
			t.Errorf("poll %d: read b.sql = %v, want %v", i, read, wantReadAt[i])
		}
		st := w.Status()
		if i < 15 {
			if !st.DownloadFailing {
				t.Errorf("poll %d: download_failing = 0 while b.sql's reads fail", i)
			}
			if st.LastResult == nil || !st.LastResult.OK || st.LastResult.Key != "a.sql" {
				t.Errorf("poll %d: checksum_ok must keep a.sql's verdict, got %+v", i, st.LastResult)
			}
		}
		clock = clock.Add(time.Minute)
	}
	st := w.Status()
	if st.DownloadFailing || st.LastResult == nil || !st.LastResult.OK || st.LastResult.Key != "b.sql" {
		t.Errorf("after the fifth read: download_failing %v, last result %+v; want 0 and b.sql verified", st.DownloadFailing, st.LastResult)
	}
	if got := st.Failures[ReasonDownloadError]; got != 4 {
		t.Errorf("verify_failures_total{reason=download_error} = %d, want 4", got)
	}
	if got := retryWait(time.Minute, 100); got != time.Hour {
		t.Errorf("backoff after 100 failures = %v, want the 1h cap", got)
	}
}

// fakeScratch is a Scratch whose restores fail, block or pass on demand.
type fakeScratch struct {
	restoreErr error
	block      chan struct{} // closed when a restore starts blocking; nil: no block
}

func (f *fakeScratch) Location() string { return "fake" }

func (f *fakeScratch) Create(context.Context, string, ArchiveInfo) (ScratchDB, error) {
	return &fakeDB{f: f}, nil
}

type fakeDB struct{ f *fakeScratch }

func (d *fakeDB) Name() string          { return "bv_fake" }
func (d *fakeDB) ServerVersion() string { return "15.0" }
func (d *fakeDB) Restore(ctx context.Context, _ string, _ ArchiveInfo, _ RestoreOptions) (RestoreReport, error) {
	if d.f.block != nil {
		close(d.f.block)
		<-ctx.Done()
		return RestoreReport{}, ctx.Err()
	}
	return RestoreReport{Tool: "psql"}, d.f.restoreErr
}
func (d *fakeDB) Query(context.Context, string, time.Duration) (float64, bool, error) {
	return 1, true, nil
}
func (d *fakeDB) Rows(context.Context, string, time.Duration) ([][]string, error) { return nil, nil }
func (d *fakeDB) Close(context.Context) error                                     { return nil }

// fakeChecker returns one check whose outcome is ok.
type fakeChecker struct{ ok bool }

func (c *fakeChecker) Run(context.Context, ScratchDB, DrillBackup, *DrillResult) []CheckResult {
	v := 42.0
	return []CheckResult{{Name: "rows", Kind: "count", OK: c.ok, Value: &v}}
}

func newTestDriller(t *testing.T, dir string, sc Scratch, ck Checker, now func() time.Time) *Driller {
	mem := newMem()
	t0 := now().Add(-time.Minute)
	mem.put("a.sql", sqlDumpAt(t0), t0)
	tg := sqlTarget()
	tg.Drill = DrillSpec{Timeout: time.Minute, Jobs: 1}
	return NewDriller(tg, mem, noArchive{t}, sc, ck, dir, discard(), now)
}

// TestCheckOKComesFromTheLastDrillThatRanChecks: drill A passes, B fails a
// check, C fails in restore: the checks of record are B's, across a restart.
func TestCheckOKComesFromTheLastDrillThatRanChecks(t *testing.T) {
	now := func() time.Time { return time.Date(2025, 12, 29, 3, 0, 0, 0, time.UTC) }
	dir := t.TempDir()
	sc, ck := &fakeScratch{}, &fakeChecker{ok: true}
	d := newTestDriller(t, dir, sc, ck, now)
	if r := d.Run(context.Background(), TriggerSchedule); !r.OK {
		t.Fatalf("drill A: %s", r.Error)
	}
	ck.ok = false
	if r := d.Run(context.Background(), TriggerSchedule); r.OK || r.FailedPhase != PhaseChecks {
		t.Fatalf("drill B: want a checks failure, got ok=%v phase %s", r.OK, r.FailedPhase)
	}
	sc.restoreErr = errors.New("pg_restore: boom")
	if r := d.Run(context.Background(), TriggerSchedule); r.FailedPhase != PhaseRestore {
		t.Fatalf("drill C: want a restore failure, got phase %q", r.FailedPhase)
	}
	for name, dr := range map[string]*Driller{"running": d, "after a restart": newTestDriller(t, dir, sc, ck, now)} {
		lc := dr.Status().LastChecked
		if lc == nil || len(lc.Checks) != 1 || lc.Checks[0].OK {
			t.Errorf("%s: the checks of record must be B's (failed), got %+v", name, lc)
		}
	}
}

// TestCancelledDrillIsNoVerdict: a drill cancelled from outside (shutdown)
// is counted as aborted; the last drill, its success and failures stay.
func TestCancelledDrillIsNoVerdict(t *testing.T) {
	now := func() time.Time { return time.Date(2025, 12, 29, 3, 0, 0, 0, time.UTC) }
	dir := t.TempDir()
	sc := &fakeScratch{}
	d := newTestDriller(t, dir, sc, &fakeChecker{ok: true}, now)
	if r := d.Run(context.Background(), TriggerSchedule); !r.OK {
		t.Fatalf("first drill: %s", r.Error)
	}
	sc.block = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-sc.block; cancel() }()
	r := d.Run(ctx, TriggerSchedule)
	if !r.Aborted {
		t.Fatalf("cancelled drill: aborted = false (ok=%v phase %s)", r.OK, r.FailedPhase)
	}
	st := d.Status()
	if st.Aborted != 1 || st.Total != 1 || st.Last == nil || !st.Last.OK || st.Failures[PhaseRestore] != 0 {
		t.Errorf("after a cancelled drill: aborted %d, total %d, last ok %v, restore failures %d; want 1, 1, true, 0",
			st.Aborted, st.Total, st.Last != nil && st.Last.OK, st.Failures[PhaseRestore])
	}
	// A drill that times out is a verdict, unlike one cancelled.
	sc.block = make(chan struct{})
	d.target.Drill.Timeout = 50 * time.Millisecond
	if r := d.Run(context.Background(), TriggerSchedule); r.Aborted || r.FailedPhase != PhaseRestore {
		t.Errorf("timed-out drill: aborted %v, phase %q; want a restore failure", r.Aborted, r.FailedPhase)
	}
}

// withHeaderTime returns a real custom archive (tinyDump) whose header holds
// the zone-less local time tm.
func withHeaderTime(t *testing.T, tm time.Time) []byte {
	b := bytes.Clone(tinyDump(t))
	intSize, vmin := int(b[8]), int(b[6])
	pos := 11
	if vmin >= 15 {
		pos++ // compression algorithm, one byte
	} else {
		pos += 1 + intSize // compression level
	}
	for _, v := range []int{tm.Second(), tm.Minute(), tm.Hour(), tm.Day(), int(tm.Month()) - 1, tm.Year() - 1900} {
		b[pos] = 0
		for i := range intSize {
			b[pos+1+i] = byte(v >> (8 * i))
		}
		pos += 1 + intSize
	}
	return b
}

// TestArchiveTimezone: a custom header's zone-less time is read in
// archive_timezone; a header time after the upload never makes the RPO look
// better, and the warning names the likely offset.
func TestArchiveTimezone(t *testing.T) {
	upload := time.Date(2025, 12, 29, 8, 5, 0, 0, time.UTC)
	ny, _ := time.LoadLocation("America/New_York")
	tests := []struct {
		name        string
		header      time.Time // wall clock written by pg_dump
		tz          *time.Location
		wantCreated time.Time
		wantOffset  string
	}{
		{"New York host, archive_timezone set", time.Date(2025, 12, 29, 3, 0, 0, 0, time.UTC), ny, time.Date(2025, 12, 29, 8, 0, 0, 0, time.UTC), ""},
		{"UTC host", time.Date(2025, 12, 29, 8, 0, 0, 0, time.UTC), nil, time.Date(2025, 12, 29, 8, 0, 0, 0, time.UTC), ""},
		{"Berlin host read as UTC", time.Date(2025, 12, 29, 9, 0, 0, 0, time.UTC), nil, upload, "UTC+01:00"},
		{"header 2 minutes after the upload", time.Date(2025, 12, 29, 8, 7, 0, 0, time.UTC), nil, upload, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := withHeaderTime(t, tt.header)
			mem := newMem()
			mem.put("db.dump", body, upload)
			tg := Target{Name: "t", Glob: "*.dump", Match: regexp.MustCompile(`^[^/]*\.dump$`), Checksum: "s3",
				VerifyLast: 1, Poll: time.Minute, BackupGrace: time.Minute, RPO: time.Hour, ArchiveTZ: tt.tz}
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, nil))
			w, err := NewWatcher(tg, mem, &countingArchive{}, nil, t.TempDir(), log, func() time.Time { return upload.Add(time.Hour) })
			if err != nil {
				t.Fatal(err)
			}
			w.Scan(context.Background())
			st := w.Status()
			if st.LastVerified == nil {
				t.Fatalf("not verified: %+v", st.LastResult)
			}
			if got := st.LastVerified.Created; !got.Equal(tt.wantCreated) {
				t.Errorf("backup time %v, want %v", got, tt.wantCreated)
			}
			if tt.wantOffset != "" && !strings.Contains(logs.String(), "likely_offset="+tt.wantOffset) {
				t.Errorf("no warning naming offset %s in:\n%s", tt.wantOffset, logs.String())
			}
		})
	}
}

// TestDeletedBackupsDoNotCount: when the newest verified backup is deleted,
// the verified time and the verdict describe the newest backup still there.
func TestDeletedBackupsDoNotCount(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	clock := t0.Add(time.Hour)
	now := func() time.Time { return clock }
	mem := newMem()
	mem.put("a.sql", sqlDumpAt(t0), t0)
	mem.put("b.sql", sqlDumpAt(t0.Add(30*time.Minute)), t0.Add(30*time.Minute))
	src := &flakySource{memSource: mem, fail: map[string]int{}}
	w, err := NewWatcher(sqlTarget(), src, noArchive{t}, nil, t.TempDir(), discard(), now)
	if err != nil {
		t.Fatal(err)
	}
	w.Scan(context.Background())
	if st := w.Status(); st.LastVerified == nil || !st.LastVerified.Created.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("b.sql not the newest verified: %+v", st.LastVerified)
	}
	delete(mem.objs, "b.sql")
	w.Scan(context.Background())
	st := w.Status()
	if st.LastVerified == nil || !st.LastVerified.Created.Equal(t0) {
		t.Errorf("after deleting b.sql the newest verified backup is %+v, want a.sql (%v)", st.LastVerified, t0)
	}
	if st.LastResult == nil || st.LastResult.Key != "a.sql" || !st.LastResult.OK {
		t.Errorf("after deleting b.sql the verdict is of %+v, want a.sql's", st.LastResult)
	}
	if rpo, ok := st.RPO(clock); !ok || rpo != time.Hour {
		t.Errorf("rpo = %v (%v), want 1h from a.sql", rpo, ok)
	}
	// c.sql fails; then a.sql is replaced in place by a version not yet
	// judged (its read fails): the verdict stays a.sql's, not c.sql's.
	mem.put("c.sql", []byte("not a dump"), t0.Add(-time.Hour))
	w.Scan(context.Background())
	mem.put("a.sql", sqlDumpAt(t0.Add(40*time.Minute)), clock)
	src.fail["a.sql"] = 1
	w.Scan(context.Background())
	if st := w.Status(); st.LastResult == nil || st.LastResult.Key != "a.sql" || !st.LastResult.OK {
		t.Errorf("a.sql replaced in place: the verdict is %+v, want a.sql's pass until its new version has one", st.LastResult)
	}
	delete(mem.objs, "a.sql")
	delete(mem.objs, "c.sql")
	w.Scan(context.Background())
	if st := w.Status(); st.LastVerified != nil || st.LastResult != nil {
		t.Errorf("with no backups left: verified %+v, verdict %+v; want none", st.LastVerified, st.LastResult)
	}
}

// TestStateWriteErrorsAreReported: a state file that cannot be written is
// reported through OnSaveError, by the watcher and by the driller.
func TestStateWriteErrorsAreReported(t *testing.T) {
	now := func() time.Time { return time.Date(2025, 12, 29, 3, 0, 0, 0, time.UTC) }
	dir := t.TempDir()
	mem := newMem()
	mem.put("a.sql", sqlDumpAt(now().Add(-time.Hour)), now().Add(-time.Hour))
	w, err := NewWatcher(sqlTarget(), mem, noArchive{t}, nil, dir, discard(), now)
	if err != nil {
		t.Fatal(err)
	}
	// A file where the target's state folder should be (root ignores modes).
	os.MkdirAll(filepath.Join(dir, "targets"), 0o750)
	os.WriteFile(filepath.Join(dir, "targets", "t"), nil, 0o600)
	var errs int
	w.OnSaveError = func() { errs++ }
	w.Scan(context.Background())
	if errs != 1 {
		t.Errorf("watcher: %d save errors reported, want 1", errs)
	}
	d := newTestDriller(t, dir, &fakeScratch{}, &fakeChecker{ok: true}, now)
	d.OnSaveError = func() { errs++ }
	d.Run(context.Background(), TriggerSchedule)
	if errs != 2 {
		t.Errorf("driller: %d save errors reported in all, want 2", errs)
	}
}

// TestFreshnessLagNeverNegative: a newest row after the backup's time is a
// lag of 0, and the check says why.
func TestFreshnessLagNeverNegative(t *testing.T) {
	created := time.Date(2025, 12, 29, 3, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		newest  time.Time
		want    float64
		wantWhy bool
	}{
		{created.Add(-90 * time.Second), 90, false},
		{created.Add(3 * time.Minute), 0, true},
	} {
		var r CheckResult
		freshnessLag(&r, created, float64(tt.newest.Unix()), time.Hour)
		if *r.Value != tt.want || !r.OK {
			t.Errorf("newest %v: lag %v ok %v, want %v true", tt.newest, *r.Value, r.OK, tt.want)
		}
		if why := strings.Contains(r.Actual, "after the backup's time"); why != tt.wantWhy {
			t.Errorf("newest %v: actual %q; explains a newer row: %v, want %v", tt.newest, r.Actual, why, tt.wantWhy)
		}
	}
}

// listFails is a source whose listing fails while fail is set.
type listFails struct {
	*memSource
	fail bool
}

func (l *listFails) List(ctx context.Context) ([]Object, error) {
	if l.fail {
		return nil, errors.New("403 Forbidden")
	}
	return l.memSource.List(ctx)
}

// TestWatchStateSurvivesRestartsExactly: the time watching began is saved
// even when the source has never been listed (else each restart would start
// RPOExceeded's and DrillOverdue's grace again), and the last successful
// listing is saved when the loop ends (else ScanFailing fires early after a
// restart, from a time up to 10 minutes old).
func TestWatchStateSurvivesRestartsExactly(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	clock := t0
	now := func() time.Time { return clock }
	src := &listFails{memSource: newMem(), fail: true}
	run := func() *Watcher {
		w, err := NewWatcher(sqlTarget(), src, noArchive{t}, nil, dir, discard(), now)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_ = w.Run(ctx)
		return w
	}
	run()
	clock = t0.Add(20 * time.Hour)
	if got := run().Status().Since; !got.Equal(t0) {
		t.Errorf("watch start after a restart with a source never listed = %v, want %v", got, t0)
	}
	src.fail = false
	clock = t0.Add(20*time.Hour + 3*time.Minute)
	run()
	clock = clock.Add(3 * time.Minute) // a listing 3 minutes after the last saved one
	run()
	listed := clock
	src.fail = true
	clock = listed.Add(time.Minute)
	if got := run().Status().ScanLastOK; !got.Equal(listed) {
		t.Errorf("last successful listing after a restart = %v, want %v", got, listed)
	}
}

// TestReplacedInPlaceWaitsForItsManifest: S3 lists times to the second, so
// a dump replaced in place in the same second as its old manifest was
// written looks no newer than that manifest. The manifest that verified
// the old version still being listed says the new one is being written:
// no verdict within backup_grace, also after a restart and in a drill, and
// the new manifest verifies it.
func TestReplacedInPlaceWaitsForItsManifest(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	clock := t0.Add(10 * time.Second)
	now := func() time.Time { return clock }
	mem := newMem()
	manifest := func(mod time.Time, dumps ...string) {
		var m strings.Builder
		for _, k := range dumps {
			m.WriteString(hexsum(mem.objs[k]) + "  " + k + "\n")
		}
		mem.put("CHECKSUM", []byte(m.String()), mod)
	}
	old := t0.Add(-time.Hour)
	mem.put("a.sql", sqlDumpAt(old), old)
	v1 := sqlDumpAt(t0)
	mem.put("b.sql", v1, t0)
	manifest(t0, "a.sql", "b.sql")
	tg := sqlTarget()
	tg.Checksum = ChecksumAuto
	dir := t.TempDir()
	watcher := func() *Watcher {
		w, err := NewWatcher(tg, mem, noArchive{t}, nil, dir, discard(), now)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := watcher()
	w.Scan(context.Background())
	if st := w.Status(); st.LastResult == nil || !st.LastResult.OK || st.VerifiedTotal != 2 {
		t.Fatalf("a.sql, b.sql: want both verified, got %d, last %+v", st.VerifiedTotal, st.LastResult)
	}

	// b.sql replaced in the same second as the manifest; the manifest
	// follows. A restart and a drill fall within the wait.
	mem.put("b.sql", sqlDumpAt(t0.Add(time.Minute)), t0)
	for _, restart := range []bool{false, true} {
		if restart {
			w = watcher()
		}
		clock = clock.Add(10 * time.Second)
		w.Scan(context.Background())
		st := w.Status()
		if st.Failures[ReasonMismatch] != 0 {
			t.Fatalf("new b.sql with the old manifest, within grace (restarted: %v): a mismatch; want no verdict yet", restart)
		}
		if st.LastResult == nil || !st.LastResult.OK || st.LastResult.Key != "b.sql" {
			t.Fatalf("the verdict while b.sql is rewritten (restarted: %v) is %+v, want the old version's pass", restart, st.LastResult)
		}
	}
	tg.Drill = DrillSpec{Timeout: time.Minute, Jobs: 1}
	d := NewDriller(tg, mem, noArchive{t}, &fakeScratch{}, &fakeChecker{ok: true}, dir, discard(), now)
	d.ChecksumPredates = w.ChecksumPredates
	if r := d.Run(context.Background(), TriggerSchedule); !r.OK || r.Backup.Key != "a.sql" {
		t.Fatalf("a drill while b.sql is rewritten: ok=%v on %q (%s); want a.sql restored", r.OK, r.Backup.Key, r.Error)
	}
	manifest(t0.Add(30*time.Second), "a.sql", "b.sql")
	w.Scan(context.Background())
	if st := w.Status(); st.VerifiedTotal != 1 || st.Failures[ReasonMismatch] != 0 || !st.LastResult.OK {
		t.Fatalf("new manifest: %d verified since the restart, %d mismatches; want the new b.sql verified", st.VerifiedTotal, st.Failures[ReasonMismatch])
	}
}

// TestChecksumVerdictFollowsItsFile: a backup failed for its checksum is
// read again when its checksum file gives the sum its bytes had (corrected,
// or written late), and only then: a shared manifest rewritten for other
// backups, or flipped between wrong sums, costs a small read, never a
// download and another failure; a read again that fails backs off.
func TestChecksumVerdictFollowsItsFile(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	clock := t0.Add(2 * time.Hour) // past grace: verdicts at once
	now := func() time.Time { return clock }
	mem := newMem()
	sums := map[string]string{}
	manifest := func() {
		var m strings.Builder
		for _, k := range []string{"a.sql", "b.sql", "c.sql", "d.sql", "gone.sql"} {
			if sums[k] != "" {
				m.WriteString(sums[k] + "  " + k + "\n")
			}
		}
		mem.put("CHECKSUM", []byte(m.String()), clock)
	}
	a := sqlDumpAt(t0)
	mem.put("a.sql", a, t0)
	sums["a.sql"] = hexsum([]byte("another file"))
	manifest()
	tg := sqlTarget()
	tg.Checksum = ChecksumAuto
	src := &flakySource{memSource: mem, fail: map[string]int{}}
	w, err := NewWatcher(tg, src, noArchive{t}, nil, t.TempDir(), discard(), now)
	if err != nil {
		t.Fatal(err)
	}
	scan := func(what string, verified, mismatches uint64, reads int) {
		t.Helper()
		clock = clock.Add(time.Minute)
		opens := mem.opens
		w.Scan(context.Background())
		st := w.Status()
		if st.VerifiedTotal != verified || st.Failures[ReasonMismatch] != mismatches || mem.opens-opens != reads {
			t.Fatalf("%s: %d verified, %d mismatches, %d reads; want %d, %d, %d", what, st.VerifiedTotal,
				st.Failures[ReasonMismatch], mem.opens-opens, verified, mismatches, reads)
		}
	}
	scan("a.sql against a wrong sum", 0, 1, 2)
	scan("nothing changed", 0, 1, 0)
	for i := range 3 {
		sums["a.sql"] = hexsum([]byte{byte(i)})
		manifest()
		scan("a.sql's sum flipped to another wrong one", 0, 1, 1)
	}
	b := sqlDumpAt(t0.Add(time.Minute))
	mem.put("b.sql", b, t0.Add(time.Minute))
	sums["b.sql"] = hexsum(b)
	manifest()
	scan("the manifest rewritten for b.sql", 1, 1, 3) // b: manifest + dump; a: the manifest only
	c := sqlDumpAt(t0.Add(2 * time.Minute))
	mem.put("c.sql", c, t0.Add(2*time.Minute))
	sums["c.sql"] = hexsum(c)
	manifest()
	scan("the manifest rewritten for c.sql", 2, 1, 3)
	sums["a.sql"] = strings.ToUpper(hexsum(a))
	manifest()
	src.fail["a.sql"] = 2
	// Reads of a: the manifest (is it worth it?), the manifest and the dump.
	scan("a.sql's sum corrected, its read fails", 2, 1, 3)
	scan("one poll later, the read fails again", 2, 1, 3)
	scan("backing off", 2, 1, 0)
	scan("backoff over", 3, 1, 3)
	if st := w.Status(); st.Failures[ReasonDownloadError] != 2 {
		t.Fatalf("download errors: %d, want 2", st.Failures[ReasonDownloadError])
	}
	scan("nothing changed", 3, 1, 0)

	// d.sql's line never comes within grace; then it does.
	dd := sqlDumpAt(t0.Add(3 * time.Minute))
	mem.put("d.sql", dd, t0.Add(3*time.Minute))
	manifest()
	scan("d.sql without a line in the manifest", 3, 1, 1) // the manifest
	if st := w.Status(); st.Failures[ReasonMissingChecksum] != 1 {
		t.Fatalf("missing_checksum: %d, want 1", st.Failures[ReasonMissingChecksum])
	}
	sums["gone.sql"] = hexsum(nil)
	manifest()
	scan("the manifest rewritten, still no line for d.sql", 3, 1, 1) // the manifest
	sums["d.sql"] = hexsum(dd)
	manifest()
	scan("d.sql's line written", 4, 1, 3) // the manifest twice and the dump
	if st := w.Status(); st.Catalogued != 4 || st.Failures[ReasonMissingChecksum] != 1 {
		t.Fatalf("catalogued %d, missing_checksum %d; want 4, 1", st.Catalogued, st.Failures[ReasonMissingChecksum])
	}
}

// TestDrillWaitsForTheOnlyBackupBeingWritten: a latest/ backup replaced in
// place, its manifest not yet rewritten (older than the dump), or a first
// backup whose manifest is not there yet, and nothing older to restore: a
// drill started then waits, without its clock running, for the manifest,
// instead of failing (and paging) for a backup job that was only running.
// Past backup_grace with no manifest it gives its verdict, as before.
func TestDrillWaitsForTheOnlyBackupBeingWritten(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		before func(mem *memSource) // the state when the drill starts
	}{
		{"replaced in place, old manifest", func(mem *memSource) {
			mem.put("latest/CHECKSUM", []byte(hexsum(sqlDumpAt(t0.Add(-time.Hour)))+"  backup.sql\n"), t0.Add(-time.Hour))
		}},
		{"first backup, no manifest yet", func(*memSource) {}},
	} {
		for _, manifestComes := range []bool{true, false} {
			clock := t0.Add(5 * time.Second)
			now := func() time.Time { return clock }
			mem := newMem()
			dump := sqlDumpAt(t0)
			mem.put("latest/backup.sql", dump, t0)
			tc.before(mem)
			tg := latestTarget()
			d := NewDriller(tg, mem, noArchive{t}, &fakeScratch{}, &fakeChecker{ok: true}, t.TempDir(), discard(), now)
			var waits []time.Duration
			d.Sleep = func(_ context.Context, w time.Duration) error {
				waits = append(waits, w)
				if len(waits) > 100 {
					t.Fatal("the drill waits for ever")
				}
				clock = clock.Add(w)
				if manifestComes && len(waits) == 2 {
					mem.put("latest/CHECKSUM", []byte(hexsum(dump)+"  backup.sql\n"), clock)
				}
				return nil
			}
			r := d.Run(context.Background(), TriggerSchedule)
			what := fmt.Sprintf("%s, manifest comes: %v", tc.name, manifestComes)
			if manifestComes {
				if !r.OK || len(waits) != 2 {
					t.Errorf("%s: ok=%v (%s) after %d waits; want a pass after 2", what, r.OK, r.Error, len(waits))
				}
				if want := t0.Add(5*time.Second + time.Minute); !r.Started.Equal(want) {
					t.Errorf("%s: the drill's clock started at %v, want %v, after the wait", what, r.Started, want)
				}
				continue
			}
			// 115 s of grace left: 30 s, 30 s, 30 s, then 25 s, then a verdict.
			if r.OK || r.FailedPhase != PhaseVerify || len(waits) != 4 || waits[3] != 25*time.Second {
				t.Errorf("%s: ok=%v, failed phase %q after waits %v; want a verify failure after 30s x3 and 25s", what, r.OK, r.FailedPhase, waits)
			}
		}
	}
}

// TestDrillWaitIsBoundedByBackupGrace: the wait for a backup still being
// written never lasts longer than backup_grace from when it began, whatever
// the listing says: a dump dated in the future (a clock ahead of ours), a
// latest/ dump uploaded again every poll and never given its manifest (a
// backup job crash-looping, or a hostile writer), each young each time. A
// drill that never starts gives no verdict, holds a drills.max_concurrent
// slot and shows in progress for ever: a page that never comes.
func TestDrillWaitIsBoundedByBackupGrace(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		dated time.Time                             // the dump's LastModified when the drill starts
		sleep func(mem *memSource, clock time.Time) // what happens while the drill waits
	}{
		{"dated a day ahead", t0.Add(24 * time.Hour), func(*memSource, time.Time) {}},
		{"uploaded again every poll", t0, func(mem *memSource, clock time.Time) {
			mem.put("latest/backup.sql", sqlDumpAt(clock), clock)
		}},
	} {
		clock := t0.Add(5 * time.Second)
		mem := newMem()
		mem.put("latest/backup.sql", sqlDumpAt(t0), tc.dated)
		tg := latestTarget()
		d := NewDriller(tg, mem, noArchive{t}, &fakeScratch{}, &fakeChecker{ok: true}, t.TempDir(), discard(),
			func() time.Time { return clock })
		var waited time.Duration
		d.Sleep = func(ctx context.Context, w time.Duration) error {
			if waited += w; waited > time.Hour {
				return errors.New("the drill waits for ever") // ends the wait: the test fails below
			}
			clock = clock.Add(w)
			tc.sleep(mem, clock)
			return nil
		}
		r := d.Run(context.Background(), TriggerSchedule)
		if waited > tg.BackupGrace {
			t.Errorf("%s: the drill waited %s before it started; want at most backup_grace (%s)", tc.name, waited, tg.BackupGrace)
		}
		if r.OK || r.Aborted || r.FailedPhase != PhaseVerify {
			t.Errorf("%s: ok=%v aborted=%v failed phase %q; want a verify failure (no manifest)", tc.name, r.OK, r.Aborted, r.FailedPhase)
		}
	}
}

// hangingList is a source whose listing never answers until ctx ends (a
// store that holds the connection open).
type hangingList struct {
	*memSource
	lists atomic.Int32
}

func (h *hangingList) List(ctx context.Context) ([]Object, error) {
	if h.lists.Add(1) == 1 {
		return h.memSource.List(ctx) // the first listing: a backup being written
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestDrillWaitListingThatHangs: the listings made while a drill waits for a
// backup being written are under the wait's bound too, as the drill's are
// under drill.timeout: a store that stops answering makes the drill fail
// (download), it does not hold it for ever before its clock starts.
func TestDrillWaitListingThatHangs(t *testing.T) {
	t0 := time.Now().UTC().Truncate(time.Second)
	mem := newMem()
	mem.put("latest/backup.sql", sqlDumpAt(t0), t0)
	src := &hangingList{memSource: mem}
	tg := latestTarget()
	tg.BackupGrace, tg.Poll = time.Hour, time.Second
	tg.Drill.Timeout = time.Second
	d := NewDriller(tg, src, noArchive{t}, &fakeScratch{}, &fakeChecker{ok: true}, t.TempDir(), discard(), time.Now)
	// The wait itself is bounded by backup_grace (an hour): the test gives
	// it a cancel-free minute, far more than the 1 s poll and 1 s timeout.
	done := make(chan DrillResult, 1)
	go func() { done <- d.Run(context.Background(), TriggerSchedule) }()
	select {
	case r := <-done:
		if r.OK || r.Aborted || r.FailedPhase != PhaseDownload {
			t.Fatalf("ok=%v aborted=%v failed phase %q; want a download failure", r.OK, r.Aborted, r.FailedPhase)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drill is still waiting after 10s on a listing that hangs (drill.timeout 1s, poll 1s)")
	}
}

// TestDrillCancelledWhileWaitingIsAborted: a shutdown while the drill waits
// for a backup being written makes it an aborted drill (no verdict, no
// failure counted), as a shutdown during its phases does.
func TestDrillCancelledWhileWaitingIsAborted(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	clock := t0.Add(5 * time.Second)
	mem := newMem()
	mem.put("latest/backup.sql", sqlDumpAt(t0), t0)
	tg := latestTarget()
	d := NewDriller(tg, mem, noArchive{t}, &fakeScratch{}, &fakeChecker{ok: true}, t.TempDir(), discard(),
		func() time.Time { return clock })
	ctx, cancel := context.WithCancel(context.Background())
	d.Sleep = func(ctx context.Context, w time.Duration) error {
		cancel() // the daemon shuts down during the wait
		return ctx.Err()
	}
	r := d.Run(ctx, TriggerSchedule)
	st := d.Status()
	if !r.Aborted || st.Total != 0 || st.Aborted != 1 || st.Last != nil {
		t.Fatalf("aborted=%v ok=%v phase %q; total %d aborted %d last %v: want an aborted drill, not a verdict",
			r.Aborted, r.OK, r.FailedPhase, st.Total, st.Aborted, st.Last)
	}
}

// latestTarget is a plain-SQL target whose one backup is replaced in place
// below latest/, with a manifest: backup_grace 2m, poll 30s, drill.timeout
// 1m, jobs 1.
func latestTarget() Target {
	tg := sqlTarget()
	tg.Glob, tg.Match = "latest/*.sql", regexp.MustCompile(`^latest/[^/]*\.sql$`)
	tg.Checksum = ChecksumManifest
	tg.BackupGrace, tg.Poll = 2*time.Minute, 30*time.Second
	tg.Drill = DrillSpec{Timeout: time.Minute, Jobs: 1}
	return tg
}
