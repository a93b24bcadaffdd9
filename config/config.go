// Package config reads and validates backupverify's YAML configuration.
//
// Parsing is strict: an unknown key, a value of the wrong type, a bad duration
// or cron spec is a problem naming its path and line, and every problem in a
// file is reported at once.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as in Prometheus configs: 90s, 15m, 1h30m, 30d.
type Duration time.Duration

func (d *Duration) parseScalar(s string) error {
	v, err := model.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. 90s, 15m, 1h30m, 30d)", s)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return model.Duration(d).String() }

// Size is a number of bytes written as 512MiB, 64GiB, 1TiB, 10GB or a plain
// number of bytes.
type Size int64

var sizeRE = regexp.MustCompile(`^(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?$`)

func (z *Size) parseScalar(s string) error {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return fmt.Errorf("invalid size %q (use e.g. 512MiB, 64GiB, 1TiB)", s)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return fmt.Errorf("invalid size %q", s)
	}
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50}[m[2]]
	if v*mult >= math.MaxInt64 {
		return fmt.Errorf("size %q is too large", s)
	}
	*z = Size(v * mult)
	return nil
}

// Config is the whole file.
type Config struct {
	Listen   string `yaml:"listen"`
	StateDir string `yaml:"state_dir"`
	PGBinDir string `yaml:"pg_bin_dir"`
	// Timezone is the IANA zone cron schedules are read in; "" is the
	// host's local zone, as cron does.
	Timezone string        `yaml:"timezone"`
	Verify   VerifyConfig  `yaml:"verify"`
	Drills   DrillsConfig  `yaml:"drills"`
	Reports  ReportsConfig `yaml:"reports"`
	HTTP     HTTPConfig    `yaml:"http"`
	S3       S3Config      `yaml:"s3"`
	Targets  []Target      `yaml:"targets"`
}

// VerifyConfig holds daemon-wide settings of the watch loops' verifications.
type VerifyConfig struct {
	// MaxConcurrent bounds the backups verified at once across all targets
	// (each is a download and, for custom format, a pg_restore); 0 means
	// twice the CPUs.
	MaxConcurrent int `yaml:"max_concurrent"`
	// SpillMax bounds the disk the native reader's spill files in
	// state_dir/tmp hold at once, all verifications together; 0: none.
	SpillMax Size `yaml:"spill_max"`
}

// DrillsConfig holds daemon-wide drill settings.
type DrillsConfig struct {
	MaxConcurrent int `yaml:"max_concurrent"`
	// ScratchDir holds embedded scratch clusters; "" is state_dir/scratch,
	// or /var/tmp/backupverify when the daemon runs as root.
	ScratchDir string `yaml:"scratch_dir"`
	// ScratchUser is the OS user embedded clusters run as when the daemon
	// runs as root; "" is backupverify-scratch if it exists, else nobody.
	ScratchUser string `yaml:"scratch_user"`
}

// ReportsConfig holds drill report settings.
type ReportsConfig struct {
	Retention Duration `yaml:"retention"`
	Upload    string   `yaml:"upload"`
	// SigningKeyFile holds the HMAC key reports are signed with; it must
	// lie outside state_dir, where whoever could forge reports could read it.
	SigningKeyFile string           `yaml:"signing_key_file"`
	ObjectLock     ObjectLockConfig `yaml:"object_lock"`
}

// ObjectLockConfig asks for S3 Object Lock retention on uploaded reports.
type ObjectLockConfig struct {
	Mode string `yaml:"mode"` // "", governance or compliance
	Days int    `yaml:"days"`
}

// HTTPConfig holds settings of the HTTP API.
type HTTPConfig struct {
	TriggerToken string `yaml:"trigger_token"`
}

// S3Config holds defaults for every s3:// source.
type S3Config struct {
	Region      string   `yaml:"region"`
	Endpoint    string   `yaml:"endpoint"`
	PathStyle   bool     `yaml:"path_style"`
	MaxAttempts int      `yaml:"max_attempts"`
	ReadTimeout Duration `yaml:"read_timeout"`
}

// LoadLocation returns the IANA zone name names ("" is UTC), with an error
// that says what a valid name looks like.
func LoadLocation(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if name == "Local" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
		return nil, fmt.Errorf("%q is not an IANA time zone name such as UTC or Europe/Berlin", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IANA time zone name such as UTC or Europe/Berlin", name)
	}
	return loc, nil
}

// ScheduleSpec returns a cron spec to be read in the configured timezone:
// prefixed with CRON_TZ unless it names its own zone, unchanged without a
// timezone (cron's default, the host's local zone).
func (c *Config) ScheduleSpec(spec string) string {
	if c.Timezone == "" || strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "TZ=") {
		return spec
	}
	return "CRON_TZ=" + c.Timezone + " " + spec
}

// Target is one database whose backups are watched and drilled.
type Target struct {
	Name     string `yaml:"name"`
	Source   string `yaml:"source"`
	Match    string `yaml:"match"`
	Checksum string `yaml:"checksum"`
	Manifest string `yaml:"manifest"`
	// ArchiveTimezone is the IANA zone of the host that runs pg_dump: a
	// custom-format header stores its local time without a zone.
	ArchiveTimezone string             `yaml:"archive_timezone"`
	BackupSchedule  string             `yaml:"backup_schedule"`
	BackupGrace     Duration           `yaml:"backup_grace"`
	Poll            Duration           `yaml:"poll"`
	VerifyLast      int                `yaml:"verify_last"`
	RPO             Duration           `yaml:"rpo"`
	RTO             Duration           `yaml:"rto"`
	Verify          TargetVerifyConfig `yaml:"verify"`
	Drill           DrillConfig        `yaml:"drill"`
	Checks          []Check            `yaml:"checks"`
}

// TargetVerifyConfig bounds what verifying one backup of a target may cost,
// so that a hostile or broken backup cannot hold the watch loop for ever.
type TargetVerifyConfig struct {
	// Timeout bounds one verification, download and full read.
	Timeout Duration `yaml:"timeout"`
	// MaxPlainSize bounds a plain dump's size once decompressed.
	MaxPlainSize Size `yaml:"max_plain_size"`
	// Reader reads custom-format archives: ReaderAuto (the native reader
	// where it knows the format, pg_restore elsewhere) or ReaderPgRestore.
	Reader string `yaml:"reader"`
}

// Archive readers, as targets[].verify.reader names them.
const (
	ReaderAuto      = "auto"
	ReaderPgRestore = "pg_restore"
)

// DrillConfig holds a target's restore drill settings.
type DrillConfig struct {
	Schedule    string   `yaml:"schedule"`
	Timeout     Duration `yaml:"timeout"`
	Jobs        int      `yaml:"jobs"`
	Scratch     string   `yaml:"scratch"`
	AllowErrors []string `yaml:"allow_errors"`
}

// Check is one integrity check run against a restored database. Exactly one
// of Count, Orphans, ForeignKeys, Freshness or SQL says its kind.
type Check struct {
	Name        string   `yaml:"name"`
	Count       string   `yaml:"count"`
	Orphans     string   `yaml:"orphans"`
	ForeignKeys bool     `yaml:"foreign_keys"`
	Freshness   string   `yaml:"freshness"`
	SQL         string   `yaml:"sql"`
	Min         *float64 `yaml:"min"`
	Max         *float64 `yaml:"max"`
	Equals      *float64 `yaml:"equals"`
	MaxDrop     string   `yaml:"max_drop"`
	MaxLag      Duration `yaml:"max_lag"`
	Timeout     Duration `yaml:"timeout"`
}

// Defaults of a target's verify section: a verification may take 6h (1 TiB
// at 50 MB/s), and a plain dump may decompress to 256 GiB.
const (
	DefaultVerifyTimeout = 6 * time.Hour
	DefaultMaxPlainSize  = Size(256 << 30)
	DefaultSpillMax      = Size(1 << 30)
)

// MinTriggerToken is the shortest http.trigger_token accepted, in bytes.
const MinTriggerToken = 16

// DefaultCheckTimeout is a check's statement timeout when none is given.
const DefaultCheckTimeout = 5 * time.Minute

// Checksum modes.
const (
	ChecksumAuto     = "auto"
	ChecksumManifest = "manifest"
	ChecksumSidecar  = "sidecar"
	ChecksumS3       = "s3"
	ChecksumNone     = "none"
)

// ScratchEmbedded asks for a throwaway PostgreSQL cluster run by the daemon.
const ScratchEmbedded = "embedded"

// DefaultMatch selects custom-format and plain SQL dumps.
const DefaultMatch = "**/*.{dump,sql,sql.gz}"

// Default returns a configuration with every default set and no targets.
func Default() *Config {
	return &Config{
		Listen:   ":9847",
		StateDir: "/var/lib/backupverify",
		Drills:   DrillsConfig{MaxConcurrent: 1},
		Verify:   VerifyConfig{SpillMax: DefaultSpillMax},
		Reports:  ReportsConfig{Retention: Duration(400 * 24 * time.Hour)},
		S3:       S3Config{Region: "us-east-1", MaxAttempts: 5, ReadTimeout: Duration(time.Minute)},
	}
}

func defaultTarget() Target {
	return Target{
		Match:       DefaultMatch,
		Checksum:    ChecksumAuto,
		Manifest:    "CHECKSUM",
		BackupGrace: Duration(10 * time.Minute),
		Poll:        Duration(time.Minute),
		VerifyLast:  1,
		RPO:         Duration(25 * time.Hour),
		RTO:         Duration(time.Hour),
		Verify: TargetVerifyConfig{
			Timeout:      Duration(DefaultVerifyTimeout),
			MaxPlainSize: DefaultMaxPlainSize,
			Reader:       ReaderAuto,
		},
		Drill: DrillConfig{
			Schedule: "30 3 * * *",
			Timeout:  Duration(time.Hour),
			Jobs:     runtime.NumCPU(), // pg_restore -j: one worker per CPU
			Scratch:  ScratchEmbedded,
		},
	}
}

// Load reads, parses and validates a file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseLookup(b, os.LookupEnv)
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = path
	}
	return c, err
}

// Parse parses and validates a configuration; ${VAR} in values is expanded
// with getenv, where "" means unset. A returned error is an *Error listing
// every problem.
func Parse(b []byte, getenv func(string) string) (*Config, error) {
	return ParseLookup(b, func(k string) (string, bool) {
		v := getenv(k)
		return v, v != ""
	})
}

// ParseLookup is Parse with an environment that tells unset from empty, as
// os.LookupEnv does.
func ParseLookup(b []byte, lookup func(string) (string, bool)) (*Config, error) {
	p := &problems{lines: map[string]int{}}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&root); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if err.Error() == "EOF" {
			msg = "the file is empty"
		}
		line := 0
		if _, err := fmt.Sscanf(msg, "line %d:", &line); err == nil {
			msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		}
		p.at("", line, "%s", msg)
		return nil, &Error{Problems: p.list}
	}
	c := Default()
	doc := root.Content[0]
	d := &decoder{p: p, lookup: lookup}
	// Targets are decoded one by one over their defaults.
	var targetsNode *yaml.Node
	if doc.Kind == yaml.MappingNode {
		rest := *doc
		rest.Content = nil
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if doc.Content[i].Value == "targets" && targetsNode == nil {
				targetsNode = doc.Content[i+1]
				p.lines["targets"] = doc.Content[i].Line
				continue
			}
			rest.Content = append(rest.Content, doc.Content[i], doc.Content[i+1])
		}
		doc = &rest
	}
	d.decode(doc, reflect.ValueOf(c).Elem(), "")
	if targetsNode != nil && targetsNode.Kind != yaml.SequenceNode && targetsNode.Tag != "!!null" {
		p.at("targets", targetsNode.Line, "expected a list, got %s", kindName(targetsNode))
	}
	if targetsNode != nil && targetsNode.Kind == yaml.SequenceNode {
		c.Targets = make([]Target, len(targetsNode.Content))
		for i, tn := range targetsNode.Content {
			c.Targets[i] = defaultTarget()
			d.decode(tn, reflect.ValueOf(&c.Targets[i]).Elem(), fmt.Sprintf("targets[%d]", i))
		}
	}
	c.validate(p)
	if len(p.list) > 0 {
		return nil, &Error{Problems: p.sorted()}
	}
	return c, nil
}

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9_-]+$`)
	bucketRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	arrowRE     = regexp.MustCompile(`^\s*([A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?)\.([A-Za-z_][\w$]*)\s*->\s*([A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?)\.([A-Za-z_][\w$]*)\s*$`)
	tableRE     = regexp.MustCompile(`^[A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?$`)
	columnRefRE = regexp.MustCompile(`^[A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*)?\.[A-Za-z_][\w$]*$`)
	percentRE   = regexp.MustCompile(`^(\d+(?:\.\d+)?)%$`)
)

func (c *Config) validate(p *problems) {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.add("listen", "must be host:port, e.g. \":9847\" or \"127.0.0.1:9847\"")
	}
	if c.StateDir == "" {
		p.add("state_dir", "must not be empty")
	} else if !filepath.IsAbs(c.StateDir) {
		p.add("state_dir", "%q must be an absolute path: a relative one would move with the working directory", c.StateDir)
	}
	if c.Timezone != "" {
		if _, err := LoadLocation(c.Timezone); err != nil {
			p.add("timezone", "%v", err)
		}
	}
	if c.Verify.MaxConcurrent < 0 {
		p.add("verify.max_concurrent", "must be 0 (twice the CPUs) or more")
	}
	if c.Drills.MaxConcurrent < 1 {
		p.add("drills.max_concurrent", "must be at least 1")
	}
	if c.Drills.ScratchDir != "" && !strings.HasPrefix(c.Drills.ScratchDir, "/") {
		p.add("drills.scratch_dir", "%q must be an absolute path", c.Drills.ScratchDir)
	}
	if c.Reports.Retention <= 0 {
		p.add("reports.retention", "must be positive")
	}
	if c.Reports.Upload != "" {
		if _, _, err := ParseS3URL(c.Reports.Upload); err != nil {
			p.add("reports.upload", "%v", err)
		}
	}
	if k := c.Reports.SigningKeyFile; k != "" {
		switch {
		case !filepath.IsAbs(k):
			p.add("reports.signing_key_file", "%q must be an absolute path", k)
		case filepath.IsAbs(c.StateDir) && within(k, c.StateDir):
			p.add("reports.signing_key_file", "%q lies inside state_dir: whoever can write the reports could read the key", k)
		}
	}
	switch ol := c.Reports.ObjectLock; ol.Mode {
	case "":
		if ol.Days != 0 {
			p.add("reports.object_lock.mode", "is required with days: governance or compliance")
		}
	case "governance", "compliance":
		if ol.Days < 1 {
			p.add("reports.object_lock.days", "must be at least 1")
		}
		if c.Reports.Upload == "" {
			p.add("reports.object_lock", "needs reports.upload: it locks the uploaded copies")
		}
	default:
		p.add("reports.object_lock.mode", "%q is not governance or compliance", ol.Mode)
	}
	if c.S3.Endpoint != "" {
		if u, err := url.Parse(c.S3.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add("s3.endpoint", "must be an http:// or https:// URL, got %q", c.S3.Endpoint)
		}
	}
	if n := len(c.HTTP.TriggerToken); n > 0 && n < MinTriggerToken {
		// Never echo the token.
		p.add("http.trigger_token", "is %d bytes; a token must be at least %d bytes (e.g. openssl rand -hex 16)", n, MinTriggerToken)
	}
	if c.S3.MaxAttempts < 1 {
		p.add("s3.max_attempts", "must be at least 1")
	}
	if c.S3.ReadTimeout <= 0 {
		p.add("s3.read_timeout", "must be positive")
	}
	if len(c.Targets) == 0 {
		p.add("targets", "at least one target is required")
	}
	names := map[string]int{}
	scratchNames := map[string]int{}
	for i := range c.Targets {
		t := &c.Targets[i]
		path := fmt.Sprintf("targets[%d]", i)
		switch {
		case t.Name == "":
			p.add(path+".name", "is required")
		case !nameRE.MatchString(t.Name):
			p.add(path+".name", "%q must match [a-z0-9_-]+", t.Name)
		default:
			if j, dup := names[t.Name]; dup {
				p.add(path+".name", "%q is already the name of targets[%d]", t.Name, j)
			} else if j, dup := scratchNames[strings.ReplaceAll(t.Name, "-", "_")]; dup {
				// Scratch databases are named after the target with - as _.
				p.add(path+".name", "%q and targets[%d]'s %q differ only in - and _, which scratch names do not tell apart", t.Name, j, c.Targets[j].Name)
			}
			names[t.Name] = i
			scratchNames[strings.ReplaceAll(t.Name, "-", "_")] = i
		}
		t.validate(p, path)
	}
}

func (t *Target) validate(p *problems, path string) {
	kind := ""
	switch {
	case t.Source == "":
		p.add(path+".source", "is required (s3://bucket/prefix/ or file:///path/)")
	case strings.HasPrefix(t.Source, "s3://"):
		kind = "s3"
		if _, _, err := ParseS3URL(t.Source); err != nil {
			p.add(path+".source", "%v", err)
		}
	case strings.HasPrefix(t.Source, "file://"):
		kind = "file"
		if !strings.HasPrefix(strings.TrimPrefix(t.Source, "file://"), "/") {
			p.add(path+".source", "%q: a file source needs an absolute path, e.g. file:///var/backups/crm/", t.Source)
		}
	default:
		p.add(path+".source", "%q: must start with s3:// or file://", t.Source)
	}
	if _, err := CompileGlob(t.Match); err != nil {
		p.add(path+".match", "%v", err)
	}
	switch t.Checksum {
	case ChecksumAuto, ChecksumManifest, ChecksumSidecar, ChecksumNone:
	case ChecksumS3:
		if kind == "file" {
			p.add(path+".checksum", "\"s3\" needs an s3:// source")
		}
	default:
		p.add(path+".checksum", "%q is not one of auto, manifest, sidecar, s3, none", t.Checksum)
	}
	if t.Manifest == "" || strings.Contains(t.Manifest, "/") {
		p.add(path+".manifest", "must be a file name without /")
	}
	if _, err := LoadLocation(t.ArchiveTimezone); err != nil {
		p.add(path+".archive_timezone", "%v", err)
	}
	if t.BackupSchedule != "" {
		checkCron(p, path+".backup_schedule", t.BackupSchedule)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"backup_grace", t.BackupGrace}, {"poll", t.Poll}, {"rpo", t.RPO}, {"rto", t.RTO}, {"drill.timeout", t.Drill.Timeout}, {"verify.timeout", t.Verify.Timeout}} {
		if d.v <= 0 {
			p.add(path+"."+d.key, "must be positive")
		}
	}
	if t.Poll > 0 && t.Poll.D() < time.Second {
		p.add(path+".poll", "must be at least 1s")
	}
	if t.Verify.MaxPlainSize < 1<<20 {
		p.add(path+".verify.max_plain_size", "must be at least 1MiB")
	}
	if t.Verify.Reader != ReaderAuto && t.Verify.Reader != ReaderPgRestore {
		p.add(path+".verify.reader", "unknown reader %q (use %s or %s)", t.Verify.Reader, ReaderAuto, ReaderPgRestore)
	}
	if t.VerifyLast < 1 {
		p.add(path+".verify_last", "must be at least 1")
	}
	checkCron(p, path+".drill.schedule", t.Drill.Schedule)
	if t.Drill.Jobs < 1 {
		p.add(path+".drill.jobs", "must be at least 1")
	}
	if t.Drill.Scratch != ScratchEmbedded {
		u, err := url.Parse(t.Drill.Scratch)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			// Never echo the value: it may hold a password.
			p.add(path+".drill.scratch", "must be \"embedded\" or an admin DSN postgres://user@host:port/dbname")
		} else if msg := scratchDSNProblem(u); msg != "" {
			p.add(path+".drill.scratch", "%s", msg)
		} else {
			checkSSLMode(p, path+".drill.scratch", u)
		}
	}
	checkNames := map[string]int{}
	for i := range t.Checks {
		cp := fmt.Sprintf("%s.checks[%d]", path, i)
		t.Checks[i].validate(p, cp)
		if n := t.Checks[i].Name; n != "" {
			if j, dup := checkNames[n]; dup {
				p.add(cp, "check name %q is already used by checks[%d]", n, j)
			}
			checkNames[n] = i
		}
	}
}

// within says whether path lies in dir or below it, by their cleaned names.
func within(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// checkCron reports a spec that does not parse, or that names no time that
// ever comes (0 0 30 2 *: 30 February), which would make a loop waiting for
// its next run spin.
func checkCron(p *problems, path, spec string) {
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		p.add(path, "invalid cron spec %q: %v", spec, err)
		return
	}
	if sched.Next(time.Now()).IsZero() {
		p.add(path, "cron spec %q never runs: no date matches it", spec)
	}
}

// sslModes are libpq's sslmode values.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// checkSSLMode reports an sslmode libpq does not know: a typo such as
// "verify_full" must not quietly mean something weaker.
func checkSSLMode(p *problems, path string, u *url.URL) {
	mode, ok := u.Query()["sslmode"]
	if !ok {
		return
	}
	for _, m := range mode {
		if !slices.Contains(sslModes, m) {
			p.add(path, "sslmode %q is not one of %s", m, strings.Join(sslModes, ", "))
		}
	}
}

func (c *Check) validate(p *problems, path string) {
	var kinds []string
	if c.Count != "" {
		kinds = append(kinds, "count")
	}
	if c.Orphans != "" {
		kinds = append(kinds, "orphans")
	}
	if c.ForeignKeys {
		kinds = append(kinds, "foreign_keys")
	}
	if c.Freshness != "" {
		kinds = append(kinds, "freshness")
	}
	if c.SQL != "" {
		kinds = append(kinds, "sql")
	}
	switch len(kinds) {
	case 0:
		p.add(path, "needs one of count, orphans, foreign_keys, freshness or sql")
		return
	case 1:
	default:
		p.add(path, "has %s: a check has exactly one kind", strings.Join(kinds, " and "))
		return
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(DefaultCheckTimeout)
	} else if c.Timeout < 0 {
		p.add(path+".timeout", "must be positive")
	}
	bounds := c.Min != nil || c.Max != nil || c.Equals != nil
	switch kinds[0] {
	case "count":
		if !tableRE.MatchString(c.Count) {
			p.add(path+".count", "%q is not a table name (table or schema.table)", c.Count)
		}
		if c.MaxDrop != "" {
			if m := percentRE.FindStringSubmatch(c.MaxDrop); m == nil {
				p.add(path+".max_drop", "%q must be a percentage such as 5%%", c.MaxDrop)
			}
		}
		if !bounds && c.MaxDrop == "" {
			p.add(path, "count needs min, max, equals or max_drop")
		}
		c.setName("count:" + c.Count)
	case "orphans":
		if !arrowRE.MatchString(c.Orphans) {
			p.add(path+".orphans", "%q must read child_table.column -> parent_table.column", c.Orphans)
		}
		c.rejectBounds(p, path, "orphans")
		c.setName("orphans:" + strings.Join(strings.Fields(c.Orphans), ""))
	case "foreign_keys":
		c.rejectBounds(p, path, "foreign_keys")
		c.setName("foreign_keys")
	case "freshness":
		if !columnRefRE.MatchString(c.Freshness) {
			p.add(path+".freshness", "%q must read table.column", c.Freshness)
		}
		if c.MaxLag <= 0 {
			p.add(path+".max_lag", "freshness needs a positive max_lag")
		}
		c.setName("freshness:" + c.Freshness)
	case "sql":
		if c.Name == "" {
			p.add(path+".name", "a sql check needs a name")
		}
		if !bounds {
			p.add(path, "sql needs min, max or equals")
		}
	}
	if kinds[0] != "count" && c.MaxDrop != "" {
		p.add(path+".max_drop", "only applies to count checks")
	}
	if kinds[0] != "freshness" && c.MaxLag != 0 {
		p.add(path+".max_lag", "only applies to freshness checks")
	}
}

func (c *Check) rejectBounds(p *problems, path, kind string) {
	if c.Min != nil || c.Max != nil || c.Equals != nil {
		p.add(path, "%s takes no min, max or equals (it expects 0)", kind)
	}
}

func (c *Check) setName(derived string) {
	if c.Name == "" {
		c.Name = derived
	}
}

// scratchDSNParams are the query parameters a scratch admin DSN may have:
// where the server is, and TLS. The user and database of the admin are the
// URL's own; those of a drill are the daemon's to choose.
var scratchDSNParams = map[string]bool{
	"host": true, "hostaddr": true, "port": true, "connect_timeout": true,
	"sslmode": true, "sslrootcert": true, "sslcert": true, "sslkey": true, "sslcrl": true, "sslcrldir": true, "sslsni": true,
	"channel_binding": true, "require_auth": true,
}

// scratchDSNProblem says what in a scratch DSN could redirect a drill (who
// it connects as, or to which database): user, dbname, password, service,
// passfile, options and every other query parameter that is not an
// address or a TLS setting. It never echoes values.
func scratchDSNProblem(u *url.URL) string {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "its query string cannot be parsed"
	}
	var bad []string
	for k := range q {
		if !scratchDSNParams[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Sprintf("query parameter(s) %s not allowed: a drill connects as the role it creates, to the database it creates; only host, hostaddr, port, connect_timeout, sslmode, sslrootcert, sslcert, sslkey, sslcrl, sslcrldir, sslsni, channel_binding and require_auth may follow ?", strings.Join(bad, ", "))
	}
	if u.User == nil || u.User.Username() == "" {
		return "names no admin user: postgres://user@host:port/dbname"
	}
	if u.Hostname() == "" && q.Get("host") == "" && q.Get("hostaddr") == "" {
		return "names no host: postgres://user@host:port/dbname (or ?host=/socket/folder)"
	}
	return ""
}

// ParseS3URL splits s3://bucket/prefix/ into bucket and prefix (without a leading /).
func ParseS3URL(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q: must start with s3://", s)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if !bucketRE.MatchString(bucket) {
		return "", "", fmt.Errorf("%q: %q is not a valid bucket name", s, bucket)
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return bucket, prefix, nil
}

// FilePath returns the folder of a file:// source.
func FilePath(s string) string { return strings.TrimPrefix(s, "file://") }
