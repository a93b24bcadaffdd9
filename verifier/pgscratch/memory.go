package pgscratch

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MemoryLimit is the memory this process may use: the tightest cgroup
// limit over its own cgroup and those above it (v2 memory.max, v1
// memory.limit_in_bytes), else the machine's physical memory; 0 if none
// can be read. from says which.
func MemoryLimit() (limit int64, from string) { return memoryLimit("/") }

// memoryLimit reads below root, so that tests can give it a fake tree.
func memoryLimit(root string) (int64, string) {
	phys := meminfoTotal(filepath.Join(root, "proc/meminfo"))
	limit, from := phys, "physical memory"
	if cg, src := cgroupLimit(root); cg > 0 && (limit == 0 || cg < limit) {
		limit, from = cg, src
	}
	return limit, from
}

func meminfoTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return n << 10
				}
			}
		}
	}
	return 0
}

// unlimitedV1 is what cgroup v1 reports without a limit (a page-rounded
// MaxInt64); anything this large means none.
const unlimitedV1 = int64(1) << 62

func cgroupLimit(root string) (int64, string) {
	b, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, ""
	}
	var best int64
	var from string
	consider := func(file string) {
		raw, err := os.ReadFile(file)
		if err != nil {
			return
		}
		s := strings.TrimSpace(string(raw))
		if s == "max" {
			return
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= unlimitedV1 {
			return
		}
		if best == 0 || n < best {
			best, from = n, strings.TrimPrefix(file, filepath.Clean(root))
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls, path := parts[1], parts[2]
		var base, file string
		switch {
		case parts[0] == "0" && ctrls == "":
			base, file = filepath.Join(root, "sys/fs/cgroup"), "memory.max"
		case hasController(ctrls, "memory"):
			base, file = filepath.Join(root, "sys/fs/cgroup/memory"), "memory.limit_in_bytes"
		default:
			continue
		}
		// In a container the path may be the host's, while the mount
		// shows the container's own cgroup at its root: read both.
		consider(filepath.Join(base, file))
		for p := filepath.Clean("/" + path); p != "/"; p = filepath.Dir(p) {
			consider(filepath.Join(base, p, file))
		}
	}
	return best, from
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}

// maxSharedBuffers caps an embedded cluster's shared_buffers at
// PostgreSQL's default. A scratch cluster is new for every drill, so each
// buffer a restore touches is a page the kernel faults in and zeroes, and a
// restore touches most of them: tables under a quarter of shared_buffers
// are read into it whole by the index builds, where larger ones go through
// a small ring. At 1 GiB, a restore of an 830 MiB dump took 310,000 minor
// faults and 16.4 CPU-seconds of server time; at 128 MiB, 84,000 and 15.1
// (medians of five, alternating). Scans by the checks of tables over 32 MiB
// go through a ring at either size.
const maxSharedBuffers = int64(128) << 20

// ScratchMemory divides limit among concurrent embedded clusters, each
// restoring with jobs workers: a cluster gets half of its share (the rest
// is for the daemon, pg_restore and the page cache); a quarter of that is
// shared_buffers (at most maxSharedBuffers), and the remainder is split
// between the jobs' maintenance_work_mem (index builds, at most 1 GiB
// each). So, for limits above 16 MiB (below, PostgreSQL's minimums win),
// shared_buffers + jobs × maintenance_work_mem never exceeds limit.
// Values are in bytes, rounded down to kB; limit 0 (unknown) gives
// PostgreSQL's defaults (0, 0).
func ScratchMemory(limit int64, jobs, concurrent int) (sharedBuffers, maintenanceWorkMem int64) {
	if limit <= 0 {
		return 0, 0
	}
	jobs, concurrent = max(jobs, 1), max(concurrent, 1)
	budget := limit / int64(concurrent) / 2
	const gib = int64(1) << 30
	sharedBuffers = min(budget/4, maxSharedBuffers)
	maintenanceWorkMem = min((budget-sharedBuffers)/int64(jobs), gib)
	// PostgreSQL's minimums: 128 kB and 1 MB.
	sharedBuffers = max(sharedBuffers&^1023, 128<<10)
	maintenanceWorkMem = max(maintenanceWorkMem&^1023, 1<<20)
	return sharedBuffers, maintenanceWorkMem
}

// ScratchSettings are the memory settings of an embedded cluster (see
// ScratchMemory), for ClusterOptions.Settings; nil when the limit is unknown.
func ScratchSettings(limit int64, jobs, concurrent int) map[string]string {
	sb, mwm := ScratchMemory(limit, jobs, concurrent)
	if sb == 0 {
		return nil
	}
	return map[string]string{
		"shared_buffers":       fmt.Sprintf("%dkB", sb>>10),
		"maintenance_work_mem": fmt.Sprintf("%dkB", mwm>>10),
	}
}
