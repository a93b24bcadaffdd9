package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lmittmann/tint"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/daemon"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/report"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/web"
)

// Stamped at build time with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = ""
	revision = ""
)

func buildInfo() metrics.BuildInfo {
	bi := metrics.BuildInfo{Version: version, Revision: revision}
	if info, ok := debug.ReadBuildInfo(); ok {
		if bi.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			bi.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && bi.Revision == "" {
				bi.Revision = s.Value
			}
		}
	}
	if bi.Version == "" {
		bi.Version = "dev"
	}
	if bi.Revision == "" {
		bi.Revision = "unknown"
	}
	return bi
}

const usage = `usage: backupverify <command> [flags]

commands:
  run           --config FILE                    the daemon (SIGHUP reloads the config)
  verify        --config FILE [--target NAME]    verify the newest backup of each target now
  drill         --config FILE [--target NAME] [--format md|json]
                                                 restore the newest backup of each target now, run its
                                                 checks, write and print the drill report
  reports verify --config FILE [--target NAME]   walk the reports' hash chain; name any altered or missing
  check-config  --config FILE                    validate a config, print every problem
  version                                        print version, revision and Go version

flags of every command:
  --log-level debug|info|warn|error   (default info)
  --log-format auto|text|json         (default auto: coloured text on a terminal, else JSON)
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("backupverify "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file")
	target := fs.String("target", "", "only this target")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "auto", "auto, text or json")
	format := fs.String("format", "md", "drill output: md or json")
	if cmd == "reports" {
		if len(rest) == 0 || rest[0] != "verify" {
			fmt.Fprint(stderr, usage)
			return usageError{errors.New(`reports: the only subcommand is "verify"`)}
		}
		cmd, rest = "reports verify", rest[1:]
	}
	switch cmd {
	case "run", "verify", "drill", "check-config", "version", "reports verify":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
	if err := fs.Parse(rest); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", cmd, fs.Arg(0))}
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return usageError{err}
	}
	if cmd == "version" {
		bi := buildInfo()
		fmt.Fprintf(stdout, "backupverify %s (revision %s, %s %s/%s)\n", bi.Version, bi.Revision, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	if *configPath == "" {
		return usageError{fmt.Errorf("%s: --config FILE is required", cmd)}
	}
	switch cmd {
	case "check-config":
		return checkConfig(*configPath, stdout)
	case "verify":
		return verifyNow(ctx, *configPath, *target, stdout, log)
	case "drill":
		if *format != "md" && *format != "json" {
			return usageError{fmt.Errorf("--format %q: use md or json", *format)}
		}
		return drillNow(ctx, *configPath, *target, *format, stdout, log)
	case "reports verify":
		return verifyReports(*configPath, *target, stdout)
	default:
		return runDaemon(ctx, *configPath, log)
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	switch format {
	case "text":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	}
	return nil, fmt.Errorf("--log-format %q: use auto, text or json", format)
}

func loadConfig(path string) (*config.Config, error) {
	c, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

func checkConfig(path string, stdout io.Writer) error {
	c, err := loadConfig(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK, %d target(s)\n", path, len(c.Targets))
	return nil
}

func runDaemon(ctx context.Context, path string, log *slog.Logger) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	d, err := daemon.New(daemon.Options{ConfigPath: path, Log: log, Build: buildInfo(), Reload: reload})
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return usageError{err}
		}
		return err
	}
	return d.Run(ctx, web.New(d, log, time.Now).Register)
}

func verifyNow(ctx context.Context, path, target string, stdout io.Writer, log *slog.Logger) error {
	c, err := loadConfig(path)
	if err != nil {
		return err
	}
	ws, err := daemon.NewWatchers(ctx, c, target, log, time.Now)
	if err != nil {
		if strings.HasPrefix(err.Error(), "no target named") {
			return usageError{err}
		}
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	failed := 0
	for _, w := range ws {
		r, err := w.VerifyNewest(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			failed++
			fmt.Fprintf(tw, "%s\tFAIL\t%v\n", w.Name(), err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\n", w.Name(), verdict(r, time.Now()))
		if !r.OK {
			failed++
		}
	}
	tw.Flush()
	if failed > 0 {
		return failedError{fmt.Sprintf("%d target(s) failed", failed)}
	}
	return nil
}

// verdict is one line about a verification result.
func verdict(r verifier.Result, now time.Time) string {
	if !r.OK {
		return fmt.Sprintf("FAIL\t%s: %s", r.Reason, r.Error)
	}
	sum := r.SHA256
	if len(sum) > 12 {
		sum = sum[:12]
	}
	return fmt.Sprintf("OK\t%s created %s (%s ago), %d bytes, %s, sha256 %s (%s), read in %.1fs",
		r.Key, r.Created.UTC().Format(time.RFC3339), now.Sub(r.Created).Round(time.Second), r.Size,
		r.Archive.Format, sum, r.ChecksumFrom, float64(r.Duration))
}

// drillNow runs one drill per target, one after another, writes each
// report into state_dir and prints it.
func drillNow(ctx context.Context, path, target, format string, stdout io.Writer, log *slog.Logger) error {
	c, err := loadConfig(path)
	if err != nil {
		return err
	}
	ds, err := daemon.NewDrillers(ctx, c, target, log, time.Now)
	if err != nil {
		if strings.HasPrefix(err.Error(), "no target named") {
			return usageError{err}
		}
		return err
	}
	store, err := daemon.NewReportStore(ctx, c, log, time.Now)
	if err != nil {
		return err
	}
	failed := 0
	var reports []json.RawMessage
	for i, d := range ds {
		r, paths, md := daemon.DrillAndReport(ctx, d, store, "manual", log)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !r.OK {
			failed++
		}
		if format == "md" {
			if i > 0 {
				fmt.Fprint(stdout, "\n---\n\n")
			}
			stdout.Write(md)
			continue
		}
		js, err := os.ReadFile(paths.JSON)
		if err != nil {
			return fmt.Errorf("read report: %w", err)
		}
		reports = append(reports, js)
	}
	if format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	}
	if failed > 0 {
		return failedError{fmt.Sprintf("%d drill(s) failed", failed)}
	}
	return nil
}

// verifyReports walks each target's chain of reports.
func verifyReports(path, target string, stdout io.Writer) error {
	c, err := loadConfig(path)
	if err != nil {
		return err
	}
	store := &report.Store{Dir: filepath.Join(c.StateDir, "reports")}
	targets, err := store.Targets()
	if err != nil {
		return err
	}
	if target != "" {
		targets = []string{target}
	}
	broken := 0
	for _, t := range targets {
		n, probs, err := store.Verify(t)
		if err != nil {
			return err
		}
		if len(probs) == 0 {
			fmt.Fprintf(stdout, "%s: OK, %d report(s), chain intact\n", t, n)
			continue
		}
		broken++
		fmt.Fprintf(stdout, "%s: BROKEN, %d report(s) checked, %d problem(s):\n", t, n, len(probs))
		for _, p := range probs {
			fmt.Fprintf(stdout, "  %s\n", p)
		}
	}
	if len(targets) == 0 {
		fmt.Fprintf(stdout, "no reports in %s\n", store.Dir)
	}
	if broken > 0 {
		return failedError{fmt.Sprintf("%d target(s) with a broken chain", broken)}
	}
	return nil
}
