package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/backupverify/backupverify/internal/testenv"
)

// BenchmarkScale runs the daemon binary with BENCH_SCALE_TARGETS targets
// (default 1000), one small custom-format backup each on a local versitygw,
// poll 1m, and reports: time until every target is verified, peak RSS (the
// kernel's VmHWM), steady CPU over BENCH_SCALE_STEADY (default 70s, more than
// one poll), the most pg_restore processes seen at once, and the time and
// series count of one /metrics scrape. Run it with `make bench-scale`.
func BenchmarkScale(b *testing.B) {
	n := envInt("BENCH_SCALE_TARGETS", 1000)
	steady := time.Duration(envInt("BENCH_SCALE_STEADY", 70)) * time.Second
	pg := testenv.StartPostgres(b)
	pg.CreateSample(b, "crm", 100)
	dir := b.TempDir()
	bin := filepath.Join(dir, "backupverify")
	// BENCH_SCALE_HEAP=FILE saves a heap profile once all are verified;
	// BENCH_SCALE_CPU=FILE a CPU profile of the steady window.
	heapFile, cpuFile := os.Getenv("BENCH_SCALE_HEAP"), os.Getenv("BENCH_SCALE_CPU")
	build := exec.Command("go", "build", "-o", bin)
	if pkg := os.Getenv("BENCH_SCALE_PKG"); pkg != "" {
		// Another tree's daemon, e.g. a checkout of an older commit to compare.
		build.Dir = pkg
	}
	pprofAddr := ""
	if heapFile != "" || cpuFile != "" {
		build.Args = append(build.Args, "-tags", "pprofdebug")
		pprofAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	}
	build.Args = append(build.Args, ".")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v: %s", err, out)
	}
	dumpPath := filepath.Join(dir, "backup.dump")
	pg.Dump(b, "crm", "c", dumpPath)
	dump, _ := os.ReadFile(dumpPath)
	sum := sha256.Sum256(dump)
	manifest := []byte(hex.EncodeToString(sum[:]) + "  backup.dump\n")

	s3srv := testenv.StartS3(b)
	s3srv.CreateBucket(b, "scale")
	var cfg bytes.Buffer
	port := testenv.FreePort(b)
	fmt.Fprintf(&cfg, "listen: 127.0.0.1:%d\nstate_dir: %s/state\npg_bin_dir: %s\ns3: {endpoint: %q, path_style: true}\ntargets:\n",
		port, dir, pg.Bins.Dir, s3srv.Direct)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("t%04d", i)
		fmt.Fprintf(&cfg, "  - {name: %s, source: \"s3://scale/%s/\", checksum: manifest, poll: 1m, rpo: 25h}\n", names[i], names[i])
	}
	putAll(b, s3srv.Client, names, dump, manifest)
	cfgPath := filepath.Join(dir, "scale.yml")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	for range b.N {
		os.RemoveAll(filepath.Join(dir, "state"))
		logf, _ := os.Create(filepath.Join(dir, "daemon.log"))
		cmd := exec.Command(bin, "run", "--config", cfgPath, "--log-format", "json")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = append(os.Environ(), "BACKUPVERIFY_PPROF_ADDR="+pprofAddr)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pid := cmd.Process.Pid
		stopSampling := make(chan struct{})
		maxRestores := make(chan int, 1)
		go func() { maxRestores <- sampleChildren(pid, "pg_restore", stopSampling) }()
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		var toVerified time.Duration
		var verified, finished int
		for {
			if time.Since(start) > 10*time.Minute {
				_ = cmd.Process.Kill()
				b.Fatalf("not all %d targets verified after 10m; log in %s", n, logf.Name())
			}
			time.Sleep(time.Second)
			if m, err := fetch(base + "/metrics"); err == nil {
				if verified, finished = countVerified(m); finished == n {
					toVerified = time.Since(start)
					break
				}
			}
		}
		close(stopSampling)
		if heapFile != "" {
			if p, err := fetch("http://" + pprofAddr + "/debug/pprof/heap"); err == nil {
				_ = os.WriteFile(heapFile, p, 0o644)
			}
		}
		cpu0, t0 := cpuSeconds(b, pid), time.Now()
		if cpuFile != "" {
			if p, err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(steady.Seconds()))); err == nil {
				_ = os.WriteFile(cpuFile, p, 0o644)
			}
		} else {
			time.Sleep(steady)
		}
		cpuPct := 100 * (cpuSeconds(b, pid) - cpu0) / time.Since(t0).Seconds()
		var scrapes []time.Duration
		var series int
		for range 3 {
			s := time.Now()
			m, err := fetch(base + "/metrics")
			if err != nil {
				b.Fatal(err)
			}
			scrapes = append(scrapes, time.Since(s))
			series = countSeries(m)
		}
		sort.Slice(scrapes, func(i, j int) bool { return scrapes[i] < scrapes[j] })
		rss, hwm := procStatusKiB(b, pid, "VmRSS"), procStatusKiB(b, pid, "VmHWM")
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		logf.Close()

		b.ReportMetric(toVerified.Seconds(), "s-to-all-verified")
		b.ReportMetric(float64(hwm)/1024, "MiB-peak-RSS")
		b.ReportMetric(cpuPct, "%CPU-steady")
		b.ReportMetric(scrapes[1].Seconds(), "s-scrape")
		if verified != n {
			fmt.Printf("scale: %d of %d backups FAILED verification (log in %s)\n", n-verified, n, logf.Name())
		}
		fmt.Printf("scale: %d targets, %d CPUs: all verified in %.1f s; steady CPU %.2f%% of a core over %s; "+
			"RSS %.0f MiB (peak %.0f MiB); at most %d pg_restore at once; scrape %.3f s for %d series\n",
			n, numCPU(), toVerified.Seconds(), cpuPct, steady, float64(rss)/1024, float64(hwm)/1024,
			<-maxRestores, scrapes[1].Seconds(), series)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "\nprocessor") + 1
}

// putAll uploads one backup and its manifest below each name/, 8 at a time.
func putAll(b *testing.B, c *s3.Client, names []string, dump, manifest []byte) {
	var wg sync.WaitGroup
	work := make(chan string)
	errs := make(chan error, len(names))
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				for key, body := range map[string][]byte{"2026-01-01T0000Z/backup.dump": dump, "2026-01-01T0000Z/CHECKSUM": manifest} {
					if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("scale"),
						Key: aws.String(name + "/" + key), Body: bytes.NewReader(body)}); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	for _, n := range names {
		work <- n
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

func fetch(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// countVerified counts the targets whose newest backup passed, and those
// whose verification finished either way.
func countVerified(metrics []byte) (ok, finished int) {
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l, found := strings.CutPrefix(sc.Text(), "backupverify_backup_checksum_ok{"); found {
			finished++
			if strings.HasSuffix(l, " 1") {
				ok++
			}
		}
	}
	return ok, finished
}

func countSeries(metrics []byte) int {
	n := 0
	for _, l := range strings.Split(string(metrics), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			n++
		}
	}
	return n
}

// cpuSeconds is the user+system CPU time pid and its waited-for children used.
func cpuSeconds(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	var ticks float64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseFloat(f[i], 64)
		ticks += v
	}
	return ticks / 100 // USER_HZ
}

func procStatusKiB(b *testing.B, pid int, field string) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kib
		}
	}
	return 0
}

// sampleChildren returns the most direct children of pid named comm seen at
// once, sampling every 20ms until stop closes.
func sampleChildren(pid int, comm string, stop <-chan struct{}) int {
	most := 0
	for {
		select {
		case <-stop:
			return most
		case <-time.After(20 * time.Millisecond):
		}
		// Children of every thread of pid (Go starts them from any thread).
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		var raw []byte
		for _, t := range tasks {
			b, _ := os.ReadFile(t)
			raw = append(append(raw, b...), ' ')
		}
		count := 0
		for _, c := range strings.Fields(string(raw)) {
			if b, err := os.ReadFile("/proc/" + c + "/comm"); err == nil && strings.TrimSpace(string(b)) == comm {
				count++
			}
		}
		most = max(most, count)
	}
}
