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
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/version"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/daemon"
	"github.com/backupverify/backupverify/internal/logging"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/report"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/pgscratch"
	"github.com/backupverify/backupverify/web"
)

// buildInfo is the build's version and revision: stamped by the Makefile and
// the Dockerfile into github.com/prometheus/common/version with -ldflags -X,
// else taken from the module's and VCS's build information.
func buildInfo() metrics.BuildInfo {
	bi := metrics.BuildInfo{Version: version.Version, Revision: version.GetRevision()}
	if bi.Version == "" {
		if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
			bi.Version = info.Main.Version
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

// command is one of backupverify's commands, with the flags it takes besides
// --log-level and --log-format, which every command takes.
type command struct {
	name     string
	synopsis string
	summary  string
	flags    []string
}

var commands = []command{
	{"run", "--config FILE [--web.config.file FILE]", "the daemon (SIGHUP reloads the config)", []string{"config", "web.config.file"}},
	{"verify", "--config FILE [--target NAME]", "verify the newest backup of each target now", []string{"config", "target"}},
	{"drill", "--config FILE [--target NAME] [--format md|json]",
		"restore the newest backup of each target now, run its checks, write and print the drill report",
		[]string{"config", "target", "format"}},
	{"reports verify", "--config FILE [--target NAME]",
		"walk the drill reports' hash chain; name any report altered or missing", []string{"config", "target"}},
	{"check-config", "--config FILE", "validate a config, print every problem with its line", []string{"config"}},
	{"version", "", "print version, revision and Go version", nil},
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: backupverify <command> [flags]\n\ncommands:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.name, c.synopsis, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
flags of every command:
  --log-level debug|info|warn|error   (default info)
  --log-format auto|text|json         (default auto: coloured text on a terminal, else JSON)

backupverify <command> --help shows a command's flags; backupverify --version its version.
`)
}

// options are the values of every flag; a command defines only its own.
type options struct {
	config, target, format, logLevel, logFormat, webConfig string
}

func (c command) flagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("backupverify "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by exitCode
	fs.Usage = func() {}
	for _, f := range c.flags {
		switch f {
		case "config":
			fs.StringVar(&o.config, "config", "", "the configuration file (required)")
		case "target":
			fs.StringVar(&o.target, "target", "", "only this target")
		case "format":
			fs.StringVar(&o.format, "format", "md", "print the report as Markdown (md) or JSON (json)")
		case "web.config.file":
			fs.StringVar(&o.webConfig, "web.config.file", "",
				"TLS and basic auth for the HTTP endpoint: a Prometheus exporter-toolkit web configuration")
		}
	}
	fs.StringVar(&o.logLevel, "log-level", "info", logging.LevelUsage)
	fs.StringVar(&o.logFormat, "log-format", "auto", logging.FormatUsage)
	return fs
}

// placeholders name each flag's value in help texts.
var placeholders = map[string]string{"config": "FILE", "target": "NAME", "format": "md|json", "web.config.file": "FILE",
	"log-level": "LEVEL", "log-format": "FORMAT"}

// printUsage writes a command's synopsis and its flags, and only its own.
func (c command) printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: backupverify %s", c.name)
	if c.synopsis != "" {
		fmt.Fprintf(w, " %s", c.synopsis)
	}
	fmt.Fprintf(w, " [--log-level LEVEL] [--log-format FORMAT]\n\n%s\n\nflags:\n", c.summary)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		help := f.Usage
		if f.DefValue != "" {
			help += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  --%s %s\t%s\n", f.Name, placeholders[f.Name], help)
	})
	tw.Flush()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return usageError{errors.New("no command given")}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if c, ok := lookupCommand(strings.Join(rest, " ")); ok {
				c.printUsage(stdout, c.flagSet(&options{}))
				return nil
			}
		}
		usage(stdout)
		return nil
	case "-version", "--version":
		name = "version"
	case "reports":
		if len(rest) == 0 || rest[0] != "verify" {
			usage(stderr)
			return usageError{errors.New(`reports: the only subcommand is "verify"`)}
		}
		name, rest = "reports verify", rest[1:]
	}
	cmd, ok := lookupCommand(name)
	if !ok {
		usage(stderr)
		return usageError{fmt.Errorf("unknown command %q", name)}
	}
	var o options
	fs := cmd.flagSet(&o)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmd.printUsage(stdout, fs)
			return nil
		}
		cmd.printUsage(stderr, fs)
		return usageError{fmt.Errorf("%s: %w", cmd.name, err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", cmd.name, fs.Arg(0))}
	}
	log, err := logging.New(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return usageError{err}
	}
	if cmd.name == "version" {
		bi := buildInfo()
		fmt.Fprintf(stdout, "backupverify %s (revision %s, %s %s/%s)\n", bi.Version, bi.Revision, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	if o.config == "" {
		return usageError{fmt.Errorf("%s: --config FILE is required", cmd.name)}
	}
	switch cmd.name {
	case "check-config":
		return checkConfig(o.config, stdout)
	case "verify":
		return verifyNow(ctx, o.config, o.target, stdout, log)
	case "drill":
		if o.format != "md" && o.format != "json" {
			return usageError{fmt.Errorf("--format %q: use md or json", o.format)}
		}
		return drillNow(ctx, o.config, o.target, o.format, stdout, log)
	case "reports verify":
		return verifyReports(o.config, o.target, stdout)
	default:
		return runDaemon(ctx, o.config, o.webConfig, log)
	}
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

func runDaemon(ctx context.Context, path, webConfig string, log *slog.Logger) error {
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
	d, err := daemon.New(daemon.Options{ConfigPath: path, WebConfigFile: webConfig, Log: log, Build: buildInfo(), Reload: reload})
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
	release, err := daemon.LockStateDir(c.StateDir)
	if err != nil {
		return err
	}
	defer release()
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
	release, err := daemon.LockStateDir(c.StateDir)
	if err != nil {
		return err
	}
	defer release()
	ds, err := daemon.NewDrillers(ctx, c, target, log, time.Now)
	if err != nil {
		if strings.HasPrefix(err.Error(), "no target named") {
			return usageError{err}
		}
		return err
	}
	// The spare cluster a drill starts making for the next one (a copy
	// of the template, see pgscratch.Embedded.PrepareSpare) is finished
	// before the process exits, so the next run renames it into place.
	defer pgscratch.WaitSpares()
	store, err := daemon.NewReportStore(ctx, c, log, time.Now)
	if err != nil {
		return err
	}
	failed := 0
	var reports []json.RawMessage
	for i, d := range ds {
		r, paths, md := daemon.DrillAndReport(ctx, d, store, verifier.TriggerCLI, log)
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

// verifyReports walks the chain of reports of each configured target (and
// of any other folder in state_dir/reports), cross-checked against the
// drills recorded in drill.json, pruning against reports.retention, and
// signatures when reports.signing_key_file is set.
func verifyReports(path, target string, stdout io.Writer) error {
	c, err := loadConfig(path)
	if err != nil {
		return err
	}
	key, err := daemon.SigningKey(c)
	if err != nil {
		return err
	}
	store := &report.Store{Dir: filepath.Join(c.StateDir, "reports"), Retention: c.Reports.Retention.D(),
		Now: time.Now, SigningKey: key}
	var targets []string
	for _, t := range c.Targets {
		targets = append(targets, t.Name)
	}
	folders, err := store.Targets()
	if err != nil {
		return err
	}
	for _, f := range folders {
		if !slices.Contains(targets, f) {
			targets = append(targets, f)
		}
	}
	if target != "" {
		targets = []string{target}
	}
	broken := 0
	for _, t := range targets {
		last, lastOK, err := verifier.LoadDrills(c.StateDir, t)
		if err != nil {
			return fmt.Errorf("read drill state: %w", err)
		}
		n, probs, err := store.VerifyTarget(t, last, lastOK)
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
	if broken > 0 {
		return failedError{fmt.Sprintf("%d target(s) with a broken chain", broken)}
	}
	return nil
}
