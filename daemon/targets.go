package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/report"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/filesource"
	"github.com/backupverify/backupverify/verifier/pgdump"
	"github.com/backupverify/backupverify/verifier/pgscratch"
	"github.com/backupverify/backupverify/verifier/s3source"
)

// s3Clients hands out one S3 client per set of client options (endpoint,
// region, path style, retries, timeout), shared by every target and the
// report upload that use it: one credential chain, one transport, one pool of
// connections, however many targets there are.
type s3Clients struct {
	mu  sync.Mutex
	m   map[s3source.ClientOptions]*s3source.Client
	log *slog.Logger // given to each client
}

func (sc *s3Clients) get(ctx context.Context, c *config.Config) (*s3source.Client, error) {
	opt := s3ClientOptions(c)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if cl, ok := sc.m[opt]; ok {
		return cl, nil
	}
	cl, err := s3source.NewClient(ctx, opt)
	if err != nil {
		return nil, err
	}
	cl.SetLog(sc.log)
	if sc.m == nil {
		sc.m = map[s3source.ClientOptions]*s3source.Client{}
	}
	sc.m[opt] = cl
	return cl, nil
}

// source builds the Source a target's source URL names.
func (sc *s3Clients) source(ctx context.Context, c *config.Config, url string) (verifier.Source, error) {
	if bucket, prefix, err := config.ParseS3URL(url); err == nil {
		cl, err := sc.get(ctx, c)
		if err != nil {
			return nil, err
		}
		return cl.Source(bucket, prefix), nil
	}
	return filesource.New(config.FilePath(url)), nil
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
// Their embedded drills leave the next drill's spare cluster being made in
// the background: call pgscratch.WaitSpares before the process exits.
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
	instance, err := InstanceID(c.StateDir)
	if err != nil {
		return nil, err
	}
	sh := &shared{bins: bins, instance: instance, s3: &s3Clients{log: log}, gate: verifier.NewGate(c.Verify.MaxConcurrent)}
	pgdump.SetSpillMax(int64(c.Verify.SpillMax))
	var out []*targetParts
	for _, t := range c.Targets {
		if only != "" && t.Name != only {
			continue
		}
		p, err := newTarget(ctx, c, t, sh, log, now)
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

// shared is what every target of a daemon uses alike: the PostgreSQL
// programs, the instance id, the S3 clients, and the gate bounding
// verifications at once.
type shared struct {
	bins     pgscratch.Bins
	instance string
	s3       *s3Clients
	gate     verifier.Gate
}

func newTarget(ctx context.Context, c *config.Config, t config.Target, sh *shared, log *slog.Logger, now func() time.Time) (*targetParts, error) {
	bins, instance := sh.bins, sh.instance
	src, err := sh.s3.source(ctx, c, t.Source)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	vt, err := domainTarget(c, t)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	ar := pgscratch.ArchiveReader{Bins: bins}
	w, err := verifier.NewWatcher(vt, src, ar, sh.gate, c.StateDir, log, now)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	d := verifier.NewDriller(vt, src, ar, newScratch(c, t, bins, instance, log, now), newChecker(vt), c.StateDir, log, now)
	d.ChecksumPredates = w.ChecksumPredates
	return &targetParts{w: w, d: d}, nil
}

func newScratch(c *config.Config, t config.Target, bins pgscratch.Bins, instance string, log *slog.Logger, now func() time.Time) verifier.Scratch {
	if t.Drill.Scratch == config.ScratchEmbedded {
		e := embeddedScratch(c, bins, instance, log, now)
		limit, _ := pgscratch.MemoryLimit()
		e.Settings = pgscratch.ScratchSettings(limit, t.Drill.Jobs, c.Drills.MaxConcurrent)
		return e
	}
	return serverScratch(t.Drill.Scratch, bins, instance, log, now)
}

// domainTarget is the one conversion of a configured target into the
// domain's Target.
func domainTarget(c *config.Config, t config.Target) (verifier.Target, error) {
	match, err := config.CompileGlob(t.Match)
	if err != nil {
		return verifier.Target{}, err
	}
	tz, err := config.LoadLocation(t.ArchiveTimezone)
	if err != nil {
		return verifier.Target{}, err
	}
	schedule := t.BackupSchedule
	if schedule != "" {
		schedule = c.ScheduleSpec(schedule)
	}
	vt := verifier.Target{
		Name: t.Name, Glob: t.Match, Match: match, Checksum: t.Checksum, Manifest: t.Manifest,
		ArchiveTZ: tz, BackupSchedule: schedule, BackupGrace: t.BackupGrace.D(), Poll: t.Poll.D(), VerifyLast: t.VerifyLast,
		RPO: t.RPO.D(), RTO: t.RTO.D(),
		Verify: verifier.VerifySpec{Timeout: t.Verify.Timeout.D(), MaxPlainBytes: int64(t.Verify.MaxPlainSize),
			PgRestoreOnly: t.Verify.Reader == config.ReaderPgRestore},
		Drill: verifier.DrillSpec{Timeout: t.Drill.Timeout.D(), Jobs: t.Drill.Jobs, AllowErrors: t.Drill.AllowErrors},
	}
	for _, ck := range t.Checks {
		vt.Checks = append(vt.Checks, verifier.CheckSpec{
			Name: ck.Name, Count: ck.Count, Orphans: ck.Orphans, ForeignKeys: ck.ForeignKeys, Freshness: ck.Freshness,
			SQL: ck.SQL, Min: ck.Min, Max: ck.Max, Equals: ck.Equals, MaxDrop: ck.MaxDrop,
			MaxLag: ck.MaxLag.D(), Timeout: ck.Timeout.D(),
		})
	}
	return vt, nil
}

// embeddedScratch runs throwaway clusters in drills.scratch_dir.
func embeddedScratch(c *config.Config, bins pgscratch.Bins, instance string, log *slog.Logger, now func() time.Time) *pgscratch.Embedded {
	return &pgscratch.Embedded{Bins: bins, Dir: ScratchDir(c), User: c.Drills.ScratchUser, Instance: instance,
		TemplateDir: filepath.Join(c.StateDir, "template"), Log: log, Now: now}
}

// ScratchDir is where c's embedded clusters live.
func ScratchDir(c *config.Config) string {
	if c.Drills.ScratchDir != "" {
		return c.Drills.ScratchDir
	}
	return pgscratch.DefaultScratchDir(c.StateDir)
}

// serverScratch makes scratch databases on the server adminDSN names.
func serverScratch(adminDSN string, bins pgscratch.Bins, instance string, log *slog.Logger, now func() time.Time) *pgscratch.Server {
	return &pgscratch.Server{Bins: bins, AdminDSN: adminDSN, Instance: instance, Log: log, Now: now}
}

// s3ClientOptions are the client options of every bucket: the s3 section of c.
func s3ClientOptions(c *config.Config) s3source.ClientOptions {
	return s3source.ClientOptions{Region: c.S3.Region, Endpoint: c.S3.Endpoint,
		PathStyle: c.S3.PathStyle, MaxAttempts: c.S3.MaxAttempts, ReadTimeout: c.S3.ReadTimeout.D()}
}

// newChecker returns the target's integrity checks, or nil without any.
func newChecker(t verifier.Target) verifier.Checker {
	if len(t.Checks) == 0 {
		return nil
	}
	return verifier.NewChecks(t.Checks)
}

// NewReportStore returns where drill reports of c are kept (and copied to).
func NewReportStore(ctx context.Context, c *config.Config, log *slog.Logger, now func() time.Time) (*report.Store, error) {
	return newReportStore(ctx, c, &s3Clients{log: log}, log, now)
}

func newReportStore(ctx context.Context, c *config.Config, s3c *s3Clients, log *slog.Logger, now func() time.Time) (*report.Store, error) {
	st := &report.Store{Dir: filepath.Join(c.StateDir, "reports"), Retention: c.Reports.Retention.D(), Log: log, Now: now}
	key, err := SigningKey(c)
	if err != nil {
		return nil, err
	}
	st.SigningKey = key
	if c.Reports.Upload != "" {
		bucket, prefix, err := config.ParseS3URL(c.Reports.Upload)
		if err != nil {
			return nil, err
		}
		cl, err := s3c.get(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("reports.upload: %w", err)
		}
		up := cl.Source(bucket, prefix)
		st.Upload = up
		if ol := c.Reports.ObjectLock; ol.Mode != "" {
			st.Upload = &s3source.LockedUploader{Source: up, Mode: ol.Mode, Days: ol.Days, Now: now}
		}
	}
	return st, nil
}

// minSigningKey is the shortest reports signing key accepted, in bytes.
const minSigningKey = 32

// SigningKey reads reports.signing_key_file (nil without one). The file must
// hold at least 32 bytes and, its links resolved, lie outside state_dir.
func SigningKey(c *config.Config) ([]byte, error) {
	path := c.Reports.SigningKeyFile
	if path == "" {
		return nil, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("reports.signing_key_file: %w", err)
	}
	state, err := filepath.EvalSymlinks(c.StateDir)
	if err == nil {
		if rel, err := filepath.Rel(state, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return nil, fmt.Errorf("reports.signing_key_file %s resolves to %s, inside state_dir: whoever can write the reports could read the key", path, real)
		}
	}
	b, err := os.ReadFile(real)
	if err != nil {
		return nil, fmt.Errorf("reports.signing_key_file: %w", err)
	}
	key := bytes.TrimSpace(b)
	if len(key) < minSigningKey {
		return nil, fmt.Errorf("reports.signing_key_file %s holds %d bytes; a key must be at least %d (e.g. openssl rand -hex 32)", path, len(key), minSigningKey)
	}
	return key, nil
}
