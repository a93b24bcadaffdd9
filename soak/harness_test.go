package soak

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/backupverify/backupverify/internal/testenv"
)

// Settings of the simulated day. Durations are scaled down so that a day's
// worth of faults fits in minutes: the daemon polls every second, a backup is due
// every minute, the RPO objective is 2m.
const (
	target      = "crm"
	bucket      = "backups"
	prefix      = "crm/"
	pollEvery   = 1 * time.Second
	backupGrace = 25 * time.Second
	rpo         = 2 * time.Minute
	drillTO     = 20 * time.Second
	// A routine backup is taken at least this often while no fault holds
	// the newest backup. The daemon calls a backup missed at the earliest
	// 2×backup_grace after the newest one (schedule every minute).
	backupEvery = 20 * time.Second
	leadsMin    = 200 // the count check's min: crm has 1000 leads, crm_small 40
)

// env is everything one soak run drives.
type env struct {
	t       *testing.T
	dir     string // short, world-searchable: the scratch cluster's user reaches pgbin
	s3      *testenv.S3
	pg      *testenv.Postgres
	bin     string
	cfgPath string
	state   string
	pgbin   string
	marker  string // the pg_restore wrapper's mode: hang, hold or fail
	held    string // written by the wrapper when it hangs or holds
	port    int
	base    string
	token   string
	prom    *exec.Cmd
	promLog *bytes.Buffer
	promAPI string
	obs     *observer

	daemon     *exec.Cmd
	daemonPID  int // 0 once it has exited
	daemonDone chan error
	started    time.Time // first start of the daemon: the target is watched since

	seq        int
	lastBackup time.Time
	locked     bool // a fault owns the newest backup: no routine backup now
	slowPoll   bool // toggled by the SIGHUP fault so that the target's loops restart
	rss        []rssSample
	lastRSS    time.Time
	backups    []string // prefixes of the backups taken, oldest first
	oldBackup  string   // the backup dated two hours ago, never deleted
}

type rssSample struct {
	at  time.Time
	pid int
	kib int64
}

// newEnv starts PostgreSQL, the S3 server, builds the daemon and writes its
// configuration. Prometheus and the daemon start in start().
func newEnv(t *testing.T) *env {
	dir, err := os.MkdirTemp("", "soak")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, state: filepath.Join(dir, "state"), pgbin: filepath.Join(dir, "pgbin"),
		marker: filepath.Join(dir, "restore-mode"), held: filepath.Join(dir, "restore-held"),
		token: "soak-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	// Runs after the daemon is gone (cleanups run last-registered first):
	// a test that failed mid-drill may leave a scratch cluster or a held
	// pg_restore of this run behind; they are ended by their process id.
	t.Cleanup(func() {
		os.Remove(e.marker)
		for i := 0; i < 50; i++ {
			stray := e.strayPIDs()
			if len(stray) == 0 {
				return
			}
			for _, pid := range stray {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("could not end: %v", e.strayProcesses())
	})

	buildDone := make(chan error, 1)
	e.bin = filepath.Join(dir, "backupverify")
	go func() {
		out, err := exec.Command("go", "build", "-o", e.bin, "github.com/backupverify/backupverify/cmd/backupverify").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build: %v: %s", err, out)
		}
		buildDone <- err
	}()

	e.pg = testenv.StartPostgres(t)
	e.pg.CreateSample(t, "crm", 500)
	e.pg.CreateSample(t, "crm_small", 20)
	e.s3 = testenv.StartS3(t)
	e.s3.CreateBucket(t, bucket)
	e.writeWrapper()
	e.port = testenv.FreePort(t)
	e.base = fmt.Sprintf("http://127.0.0.1:%d", e.port)
	e.cfgPath = filepath.Join(dir, "backupverify.yml")
	e.writeConfig()
	if err := <-buildDone; err != nil {
		t.Fatal(err)
	}
	e.obs = newObserver()
	return e
}

// writeWrapper makes pg_bin_dir: PostgreSQL's programs, with pg_restore
// wrapped so that a restore (pg_restore --verbose; reading an archive to
// /dev/null is left alone) hangs, holds until released, or fails, as the
// marker file says.
func (e *env) writeWrapper() {
	if err := os.MkdirAll(e.pgbin, 0o755); err != nil {
		e.t.Fatal(err)
	}
	ents, err := os.ReadDir(e.pg.Bins.Dir)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ent := range ents {
		if ent.Name() == "pg_restore" {
			continue
		}
		if err := os.Symlink(filepath.Join(e.pg.Bins.Dir, ent.Name()), filepath.Join(e.pgbin, ent.Name())); err != nil {
			e.t.Fatal(err)
		}
	}
	script := fmt.Sprintf(`#!/bin/sh
# pg_restore of the soak test: a restore hangs, holds or fails on request.
mode=$(cat %[1]s 2>/dev/null)
case " $* " in
*" --verbose "*)
  case "$mode" in
  hang) echo $$ > %[2]s; exec %[4]s 3600 ;;
  hold) echo $$ > %[2]s; while [ -e %[1]s ]; do sleep 0.1; done ;;
  fail) echo "pg_restore: error: restore failure injected by the soak test" >&2; exit 1 ;;
  esac ;;
esac
exec %[3]s "$@"
`, e.marker, e.held, filepath.Join(e.pg.Bins.Dir, "pg_restore"), filepath.Join(e.pgbin, "soak-hang"))
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		e.t.Fatal(err)
	}
	// A hung restore is a sleep whose command line names this folder.
	if err := os.Symlink(sleep, filepath.Join(e.pgbin, "soak-hang")); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.pgbin, "pg_restore"), []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) setRestoreMode(mode string) {
	os.Remove(e.held)
	if mode == "" {
		os.Remove(e.marker)
		return
	}
	if err := os.WriteFile(e.marker, []byte(mode), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) writeConfig() {
	poll := pollEvery
	if e.slowPoll {
		poll += time.Second
	}
	cfg := fmt.Sprintf(`# Written by the soak test.
listen: 127.0.0.1:%d
state_dir: %s
pg_bin_dir: %s
# Below the soak's own folder (world-searchable), removed with it: as root the
# default, /var/tmp/backupverify, would keep the spare copy of the template.
drills: {scratch_dir: %s}
s3: {endpoint: "%s", path_style: true, max_attempts: 3, read_timeout: 2s}
http: {trigger_token: "${SOAK_TRIGGER_TOKEN}"}
targets:
  - name: %s
    source: s3://%s/%s
    backup_schedule: "* * * * *"
    backup_grace: %s
    poll: %s
    rpo: %s
    rto: 1m
    drill:
      # Drills are started by the driver over the API, where the plan says:
      # a scheduled drill in the middle of another fault would make the
      # expected alerts depend on timing. Once a year is never, in a test.
      schedule: "0 0 1 1 *"
      timeout: %s
    checks:
      - count: leads
        min: %d
      - foreign_keys: true
`, e.port, e.state, e.pgbin, filepath.Join(e.dir, "scratch"), e.s3.Endpoint, target, bucket, prefix, model(backupGrace), model(poll), model(rpo), model(drillTO), leadsMin)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func model(d time.Duration) string { return strconv.Itoa(int(d.Seconds())) + "s" }

// start starts the daemon, then Prometheus, and waits until Prometheus has
// scraped the daemon and its alert rules settled.
func (e *env) start(promBin string) {
	e.startDaemon()
	e.started = time.Now()
	e.startPrometheus(promBin)
	e.waitUntil("Prometheus to scrape the daemon", 60*time.Second, func() bool {
		v, ok := e.promQuery(`up{job="backupverify"}`)
		return ok && v == 1
	})
	// absent() is true before the first scrape; wait for its pending alert to go.
	e.waitUntil("BackupVerifyAbsent to clear after the first scrape", 30*time.Second, func() bool {
		act, err := e.activeAlerts()
		return err == nil && !act["BackupVerifyAbsent:critical"]
	})
	go e.obs.run(e)
	e.t.Cleanup(e.obs.stop)
}

func (e *env) startDaemon() {
	f, err := os.OpenFile(filepath.Join(e.dir, "daemon.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(e.bin, "run", "--config", e.cfgPath, "--log-format", "json")
	cmd.Env = append(os.Environ(), "SOAK_TRIGGER_TOKEN="+e.token)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		f.Close()
	}()
	e.daemon, e.daemonDone, e.daemonPID = cmd, done, cmd.Process.Pid
	e.t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	e.waitUntil("the daemon to be ready", 60*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			e.t.Fatalf("the daemon exited at start: %v\n%s", err, e.daemonLogTail(40))
		default:
		}
		resp, err := http.Get(e.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// stopDaemon sends sig and waits for the process to end.
func (e *env) stopDaemon(sig syscall.Signal) error {
	if err := e.daemon.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case err := <-e.daemonDone:
		e.daemonDone <- err
		e.daemonPID = 0
		return err
	case <-time.After(60 * time.Second):
		_ = e.daemon.Process.Kill()
		e.daemonDone <- <-e.daemonDone
		e.daemonPID = 0
		return fmt.Errorf("the daemon did not exit within 60s of %v", sig)
	}
}

func (e *env) daemonLogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "daemon.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) startPrometheus(promBin string) {
	rules, err := filepath.Abs("../alerts.yaml")
	if err != nil {
		e.t.Fatal(err)
	}
	pdir := filepath.Join(e.dir, "prometheus")
	os.MkdirAll(pdir, 0o755)
	pport := testenv.FreePort(e.t)
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: backupverify
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, rules, e.port)
	if err := os.WriteFile(filepath.Join(pdir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(promBin, "--config.file="+filepath.Join(pdir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(pdir, "tsdb"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", pport),
		"--log.level=warn")
	e.promLog = new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = &lockedWriter{w: e.promLog}, &lockedWriter{w: e.promLog}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.prom = cmd
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if e.t.Failed() {
			e.t.Logf("prometheus log:\n%s", e.promLog.String())
		}
	})
	e.promAPI = fmt.Sprintf("http://127.0.0.1:%d/api/v1/", pport)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// promQuery runs an instant query returning one number.
func (e *env) promQuery(q string) (float64, bool) {
	res, err := e.promVector(q)
	if err != nil || len(res) != 1 {
		return 0, false
	}
	return res[0].value, true
}

type sample struct {
	labels map[string]string
	value  float64
}

func (e *env) promVector(q string) ([]sample, error) {
	resp, err := httpClient.Get(e.promAPI + "query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if out.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, out.Error)
	}
	var s []sample
	for _, r := range out.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(r.Value[1]), 64)
		s = append(s, sample{labels: r.Metric, value: v})
	}
	return s, nil
}

// activeAlerts are the alerts pending or firing now, as name:severity.
func (e *env) activeAlerts() (map[string]bool, error) {
	res, err := e.promVector(`ALERTS{alertstate=~"pending|firing"}`)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, s := range res {
		out[s.labels["alertname"]+":"+s.labels["severity"]] = true
	}
	return out, nil
}

// scrape reads the daemon's /metrics into series -> value.
func (e *env) scrape() map[string]float64 {
	resp, err := httpClient.Get(e.base + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// metric returns one series of the daemon's scrape (absent: 0).
func (e *env) metric(series string) float64 { return e.scrape()[series] }

// waitUntil polls cond every 200ms, keeping the day going (routine backups,
// RSS samples) meanwhile; it fails the test after within.
func (e *env) waitUntil(what string, within time.Duration, cond func() bool) {
	e.t.Helper()
	if !e.tryUntil(within, cond) {
		e.t.Fatalf("timed out after %s waiting for %s\ndaemon log:\n%s", within, what, e.daemonLogTail(30))
	}
}

// tryUntil is waitUntil that reports a timeout instead of failing.
func (e *env) tryUntil(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		e.tick()
		time.Sleep(200 * time.Millisecond)
	}
}

// sleep waits d, keeping the day going.
func (e *env) sleep(d time.Duration) { e.tryUntil(d, func() bool { return false }) }

// tick samples the daemon's RSS every 2s and, unless a fault owns the
// newest backup, takes a routine backup when the last one is getting old.
func (e *env) tick() {
	if time.Since(e.lastRSS) >= 2*time.Second && e.daemonPID != 0 {
		e.lastRSS = time.Now()
		if kib, ok := vmRSS(e.daemonPID); ok {
			e.rss = append(e.rss, rssSample{at: time.Now(), pid: e.daemonPID, kib: kib})
		}
	}
	if !e.locked && !e.lastBackup.IsZero() && time.Since(e.lastBackup) > backupEvery {
		e.backup(backupOpts{})
	}
}

func vmRSS(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			v, err := strconv.ParseInt(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// backupOpts say how a backup differs from a routine one.
type backupOpts struct {
	db          string                        // default crm
	noManifest  bool                          // leave out CHECKSUM
	corrupt     bool                          // flip a bit after computing the checksum
	headerShift time.Duration                 // move the archive header's creation time
	mutate      func([]byte) []byte           // any other change, before the checksum
	name        string                        // prefix name instead of a timestamp
	put         func(key string, body []byte) // instead of a plain upload
}

// backup dumps a database with pg_dump -Fc and uploads it as
// crm/<time>-<n>/backup.dump with a sha256sum(1) CHECKSUM beside it. It
// returns the backup's prefix below crm/.
func (e *env) backup(o backupOpts) string {
	e.t.Helper()
	db := o.db
	if db == "" {
		db = "crm"
	}
	name := o.name
	if name == "" {
		name = e.nextName()
	}
	body := e.dump(db)
	if o.headerShift != 0 {
		body = shiftHeaderTime(e.t, body, o.headerShift)
	}
	if o.mutate != nil {
		body = o.mutate(body)
	}
	sum := sha256.Sum256(body)
	if o.corrupt {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0x10
	}
	key := prefix + name + "/backup.dump"
	if o.put != nil {
		o.put(key, body)
	} else {
		e.put(key, body)
	}
	if !o.noManifest {
		e.put(prefix+name+"/CHECKSUM", []byte(hex.EncodeToString(sum[:])+"  backup.dump\n"))
	}
	e.lastBackup = time.Now()
	e.backups = append(e.backups, name)
	return name
}

// nextName is a new backup's prefix below crm/: its time and a sequence number.
func (e *env) nextName() string {
	e.seq++
	return fmt.Sprintf("%s-%04d", time.Now().UTC().Format("20060102T150405Z"), e.seq)
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (e *env) put(key string, body []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.s3.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Body: bytes.NewReader(body)}); err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
}

func (e *env) delete(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.s3.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		e.t.Fatalf("delete %s: %v", key, err)
	}
}

func (e *env) dump(db string) []byte {
	f := filepath.Join(e.dir, "dump.tmp")
	defer os.Remove(f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.pg.Bins.Path("pg_dump"), "-d", e.pg.DSN(db, ""), "-Fc", "-f", f).CombinedOutput()
	if err != nil {
		e.t.Fatalf("pg_dump %s: %v: %s", db, err, out)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// shiftHeaderTime moves the creation time that pg_dump wrote into a custom
// archive's header (local broken-down time: sec, min, hour, mday, mon, year),
// as a dumping host whose clock jumped would have written it.
func shiftHeaderTime(t *testing.T, b []byte, d time.Duration) []byte {
	if len(b) < 11 || string(b[:5]) != "PGDMP" {
		t.Fatal("not a custom archive")
	}
	vmin, intSize := b[6], int(b[8])
	pos := 11
	if vmin >= 15 {
		pos++
	} else {
		pos += 1 + intSize
	}
	read := func(i int) int {
		p := pos + i*(1+intSize)
		var buf [8]byte
		copy(buf[:], b[p+1:p+1+intSize])
		v := int(binary.LittleEndian.Uint64(buf[:]))
		if b[p] != 0 {
			v = -v
		}
		return v
	}
	created := time.Date(read(5)+1900, time.Month(read(4)+1), read(3), read(2), read(1), read(0), 0, time.UTC)
	n := created.Add(d)
	out := bytes.Clone(b)
	for i, v := range []int{n.Second(), n.Minute(), n.Hour(), n.Day(), int(n.Month()) - 1, n.Year() - 1900} {
		p := pos + i*(1+intSize)
		out[p] = 0
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], uint64(v))
		copy(out[p+1:p+1+intSize], buf[:intSize])
	}
	return out
}

// triggerDrill starts a drill over the API.
func (e *env) triggerDrill() error {
	req, _ := http.NewRequest(http.MethodPost, e.base+"/api/v1/targets/"+target+"/drill", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("trigger drill: %s", resp.Status)
	}
	return nil
}

// drillsEnded counts drills that ended, passed, failed or aborted.
func drillsEnded(m map[string]float64) float64 {
	return m[`backupverify_drills_total{target="crm"}`] + m[`backupverify_drills_aborted_total{target="crm"}`]
}

// drill starts a drill and waits for it to end; it reports whether it did
// within the bound.
func (e *env) drill(within time.Duration) bool {
	e.t.Helper()
	before := drillsEnded(e.scrape())
	var err error
	if !e.tryUntil(20*time.Second, func() bool { err = e.triggerDrill(); return err == nil }) {
		e.t.Errorf("could not start a drill: %v", err)
		return false
	}
	return e.tryUntil(within, func() bool {
		m := e.scrape()
		return m != nil && drillsEnded(m) > before && m[`backupverify_drill_in_progress{target="crm"}`] == 0
	})
}

// startHeldDrill starts a drill whose restore holds (or hangs) in the
// pg_restore wrapper, and returns once the restore is under way.
func (e *env) startHeldDrill(mode string) bool {
	e.setRestoreMode(mode)
	var err error
	if !e.tryUntil(20*time.Second, func() bool { err = e.triggerDrill(); return err == nil }) {
		e.t.Errorf("could not start a drill: %v", err)
		return false
	}
	return e.tryUntil(60*time.Second, func() bool { _, err := os.Stat(e.held); return err == nil })
}

// verifiedTotal is backups_verified_total.
func (e *env) verifiedTotal() float64 {
	return e.metric(`backupverify_backups_verified_total{target="crm"}`)
}

// backupVerified takes a backup and waits until the daemon has verified it:
// one more backup verified, and the newest backup's checksum_ok is 1.
func (e *env) backupVerified(o backupOpts, within time.Duration) (string, bool) {
	before := e.verifiedTotal()
	name := e.backup(o)
	return name, e.tryUntil(within, func() bool {
		m := e.scrape()
		return m[`backupverify_backups_verified_total{target="crm"}`] > before && m[`backupverify_backup_checksum_ok{target="crm"}`] == 1
	})
}

// leaks lists what a drill or verification left behind: scratch clusters,
// downloaded files, temporary state files, and processes started from the
// state dir or the wrapped PostgreSQL programs.
func (e *env) leaks() []string {
	var out []string
	for _, sub := range []string{"tmp", "scratch"} {
		ents, _ := os.ReadDir(filepath.Join(e.state, sub))
		for _, ent := range ents {
			out = append(out, "file: state/"+sub+"/"+ent.Name())
		}
	}
	filepath.WalkDir(e.state, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			out = append(out, "file: "+p)
		}
		return nil
	})
	out = append(out, e.strayProcesses()...)
	return out
}

// strayProcesses are processes whose command line names the state dir or
// the wrapper folder (scratch postgres, pg_restore, the wrapper's sleep), or
// whose parent is the daemon, other than the daemon itself.
func (e *env) strayProcesses() []string {
	var out []string
	for _, p := range e.stray() {
		out = append(out, fmt.Sprintf("process %d: %s", p.pid, p.cmdline))
	}
	return out
}

func (e *env) strayPIDs() []int {
	var out []int
	for _, p := range e.stray() {
		out = append(out, p.pid)
	}
	return out
}

type proc struct {
	pid     int
	cmdline string
}

func (e *env) stray() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == e.daemonPID || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		cl := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		ppid := 0
		if i := bytes.LastIndexByte(stat, ')'); i > 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) > 2 {
				ppid, _ = strconv.Atoi(f[1])
			}
		}
		if strings.Contains(cl, e.state) || strings.Contains(cl, e.pgbin) || (e.daemonPID != 0 && ppid == e.daemonPID) {
			out = append(out, proc{pid: pid, cmdline: cl})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}
