// Command backupverify-quickstart shows backupverify working on one machine:
// it creates a sample CRM database in a throwaway PostgreSQL cluster, takes
// pg_dump backups of it into a local folder on a schedule, with CHECKSUM
// manifests (a stand-in for your backup job), and runs the daemon against
// that folder, with restore drills into an embedded scratch cluster.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/backupverify/backupverify/daemon"
	"github.com/backupverify/backupverify/internal/logging"
	"github.com/backupverify/backupverify/internal/sampledata"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/verifier/pgscratch"
	"github.com/backupverify/backupverify/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// Ctrl-C stops cleanly (exit 0); a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "backupverify-quickstart:", err)
		os.Exit(1)
	}
}

type options struct {
	dir           string
	listen        string
	schedule      string
	drillSchedule string
	rows          int
	duration      time.Duration
	logLevel      string
	logFormat     string
}

const usage = `usage: backupverify-quickstart [flags]

Creates a sample CRM database in a throwaway PostgreSQL cluster, takes pg_dump
backups of it on a schedule, and runs backupverify against them, with a first
restore drill at once and the next ones on --drill-schedule. Ctrl-C stops it.

flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("backupverify-quickstart", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by main
	fs.Usage = func() {}
	fs.StringVar(&o.dir, "dir", "quickstart-data", "folder for the sample cluster, backups, config and state")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9847", "where the daemon serves /metrics and the status page")
	fs.StringVar(&o.schedule, "backup-schedule", "*/2 * * * *", "cron spec of the sample backup job")
	fs.StringVar(&o.drillSchedule, "drill-schedule", "1-59/3 * * * *", "cron spec of the restore drills")
	fs.IntVar(&o.rows, "rows", 20000, "contacts in the sample database (leads are twice as many)")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	fs.StringVar(&o.logLevel, "log-level", "info", logging.LevelUsage)
	fs.StringVar(&o.logFormat, "log-format", "auto", logging.FormatUsage)
	if err := fs.Parse(args); err != nil {
		w := stderr
		if errors.Is(err, flag.ErrHelp) {
			w, err = stdout, nil
		}
		fmt.Fprint(w, usage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	log, err := logging.New(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	return quickstart(ctx, o, stdout, log)
}

func quickstart(ctx context.Context, o options, stdout io.Writer, log *slog.Logger) error {
	sched, err := cron.ParseStandard(o.schedule)
	if err != nil {
		return fmt.Errorf("--backup-schedule: %w", err)
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	bins, err := pgscratch.FindBins("")
	if err != nil {
		return err
	}
	// The sample cluster is thrown away and made anew each run.
	pgDir := filepath.Join(dir, "sample-pg")
	if err := os.RemoveAll(pgDir); err != nil {
		return err
	}
	log.Info("creating the sample database", "postgres", bins.Major, "rows", o.rows)
	src, err := pgscratch.NewCluster(ctx, bins, pgDir)
	if err != nil {
		return err
	}
	if err := src.Start(ctx); err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := src.Remove(cctx); err != nil {
			log.Warn("remove sample cluster", "err", err)
		}
	}()
	if _, err := src.Psql(ctx, "postgres", "-c", "CREATE DATABASE crm"); err != nil {
		return err
	}
	if _, err := src.Psql(ctx, "crm", "-c", sampledata.Schema+sampledata.Fill(o.rows)); err != nil {
		return err
	}

	backups := filepath.Join(dir, "backups")
	if err := os.MkdirAll(backups, 0o755); err != nil {
		return err
	}
	if err := takeBackup(ctx, src, bins, backups, time.Now()); err != nil {
		return err
	}
	if _, err := cron.ParseStandard(o.drillSchedule); err != nil {
		return fmt.Errorf("--drill-schedule: %w", err)
	}
	if err := freshDrillsOnRowsChange(dir, o.rows, log); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "backupverify.yml")
	if err := os.WriteFile(cfgPath, []byte(configFor(o, dir)), 0o644); err != nil {
		return err
	}

	listening := make(chan struct{}, 1)
	d, err := daemon.New(daemon.Options{ConfigPath: cfgPath, Log: log,
		Build: metrics.BuildInfo{Version: "quickstart", Revision: "local"},
		Listening: func(addr string) {
			listening <- struct{}{}
			fmt.Fprintf(stdout, `
backupverify quick start is running.
  status page   http://%[1]s/
  metrics       http://%[1]s/metrics
  status JSON   http://%[1]s/api/v1/status
  config        %[2]s
  backups       %[3]s  (a new pg_dump on %[4]q)
  drills        %[6]q, into an embedded scratch cluster, reports in %[5]s/reports/crm/
  state         %[5]s
Press Ctrl-C to stop.
`, addr, cfgPath, backups, o.schedule, filepath.Join(dir, "state"), o.drillSchedule)
		}})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, web.New(d, log, time.Now).Register) }()
	select {
	case <-listening:
		// A first drill now, rather than at the schedule's next turn.
		if err := d.RunDrill("crm", "quickstart"); err != nil {
			log.Warn("first drill", "err", err)
		}
	case err := <-done:
		return err
	}

	for {
		next := sched.Next(time.Now())
		select {
		case err := <-done:
			return err
		case <-time.After(time.Until(next)):
			if err := takeBackup(ctx, src, bins, backups, next); err != nil && ctx.Err() == nil {
				log.Error("sample backup failed", "err", err)
			}
		case <-ctx.Done():
			err := <-done
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return err // --duration ran out: a normal end
			}
			return err
		}
	}
}

// rowsFile, in the data folder, holds the --rows of the last run.
const rowsFile = "rows"

// freshDrillsOnRowsChange starts the sample target's drill history afresh
// when --rows differs from the last run's (or the last run's is unknown):
// its max_drop check compares with the last passing drill, so a run with
// fewer rows would otherwise fail its own drills.
func freshDrillsOnRowsChange(dir string, rows int, log *slog.Logger) error {
	path := filepath.Join(dir, rowsFile)
	was, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	now := strconv.Itoa(rows)
	if prev := strings.TrimSpace(string(was)); prev != now {
		drills := filepath.Join(dir, "state", "targets", "crm", "drill.json")
		err := os.Remove(drills)
		switch {
		case err == nil:
			if prev == "" {
				prev = "unknown"
			}
			log.Info("--rows changed since the last run: drill history starts afresh", "rows", rows, "previous_rows", prev, "removed", drills)
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
	}
	return os.WriteFile(path, []byte(now+"\n"), 0o644)
}

func configFor(o options, dir string) string {
	return fmt.Sprintf(`# Written by backupverify-quickstart.
listen: %q
state_dir: %s
targets:
  - name: crm
    source: file://%s/
    match: "**/*.dump"
    checksum: manifest
    backup_schedule: %q
    backup_grace: 1m
    poll: 15s
    rpo: 5m
    rto: 5m
    drill:
      schedule: %q
      scratch: embedded
      jobs: 2
      timeout: 5m
    checks:
      - count: contacts
        min: 1
      - count: leads
        max_drop: 1%%
      - orphans: leads.contact_id -> contacts.id
      - foreign_keys: true
      - freshness: leads.created_at
        max_lag: 10m
      - name: no_negative_amounts
        sql: SELECT count(*) FROM opportunities WHERE amount < 0
        max: 0
`, o.listen, filepath.Join(dir, "state"), filepath.Join(dir, "backups"), o.schedule, o.drillSchedule)
}

// takeBackup adds a few rows, then dumps the database into
// backups/<UTC time>/backup.dump with a CHECKSUM beside it, as backup jobs do.
func takeBackup(ctx context.Context, src *pgscratch.Cluster, bins pgscratch.Bins, backups string, at time.Time) error {
	if _, err := src.Psql(ctx, "crm", "-c", `INSERT INTO leads
		SELECT max(id) + g, 1, 'web', now() FROM leads, generate_series(1, 10) g GROUP BY g`); err != nil {
		return err
	}
	folder := filepath.Join(backups, at.UTC().Format("2006-01-02T1504Z"))
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(folder, ".backup.dump.partial")
	cmd := exec.CommandContext(ctx, bins.Path("pg_dump"), "-Fc", "-d", src.DSN("crm", ""), "-f", tmp)
	// Its own process group: Ctrl-C stops the quick start, which then stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_dump: %v: %s", err, out)
	}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return err
	}
	// The manifest first, then the dump in place: the backup appears whole.
	if err := os.WriteFile(filepath.Join(folder, "CHECKSUM"), []byte(hex.EncodeToString(h.Sum(nil))+"  backup.dump\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(folder, "backup.dump"))
}
