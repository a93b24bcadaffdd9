package pgscratch

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestScratchMemory(t *testing.T) {
	const mib, gib = int64(1) << 20, int64(1) << 30
	cases := []struct {
		limit           int64
		jobs, conc      int
		wantSB, wantMWM int64
	}{
		{0, 4, 1, 0, 0},                        // unknown: PostgreSQL's defaults
		{512 * mib, 1, 1, 64 * mib, 192 * mib}, // budget 256 MiB
		{512 * mib, 4, 1, 64 * mib, 48 * mib},
		{512 * mib, 4, 2, 32 * mib, 24 * mib},
		{64 * gib, 2, 1, 128 * mib, gib},       // capped: 128 MiB, 1 GiB
		{8 * gib, 8, 1, 128 * mib, 496 * mib},  // budget 4 GiB: (4 GiB-128 MiB) / 8
		{3 * mib, 1, 1, 384 << 10, 1152 << 10}, // tiny
		{1 * mib, 2, 1, 128 << 10, 1 << 20},    // tinier: PostgreSQL's minimums
	}
	for _, c := range cases {
		sb, mwm := ScratchMemory(c.limit, c.jobs, c.conc)
		if sb != c.wantSB || mwm != c.wantMWM {
			t.Errorf("ScratchMemory(%d MiB, %d jobs, %d at once) = %d, %d; want %d, %d",
				c.limit/mib, c.jobs, c.conc, sb, mwm, c.wantSB, c.wantMWM)
		}
		if c.limit >= 16*mib && (sb+int64(c.jobs)*mwm)*int64(c.conc) > c.limit {
			t.Errorf("limit %d: %d clusters of shared_buffers %d + %d × %d exceed it", c.limit, c.conc, sb, c.jobs, mwm)
		}
	}
	if s := ScratchSettings(512*mib, 1, 1); s["shared_buffers"] != "65536kB" || s["maintenance_work_mem"] != "196608kB" {
		t.Errorf("settings %v", s)
	}
}

func TestMemoryLimitReadsCgroups(t *testing.T) {
	write := func(root, path, body string) {
		t.Helper()
		p := filepath.Join(root, path)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	meminfo := "MemTotal:       16318412 kB\nMemFree:         1234 kB\n"
	cases := []struct {
		name  string
		files map[string]string
		want  int64
		from  string
	}{
		{"v2 container at the mount's root", map[string]string{
			"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "1073741824\n"}, 1 << 30, "/sys/fs/cgroup/memory.max"},
		{"v2 nested, tightest ancestor wins", map[string]string{
			"proc/self/cgroup":                           "0::/kubepods/pod1/ctr\n",
			"sys/fs/cgroup/memory.max":                   "max\n",
			"sys/fs/cgroup/kubepods/memory.max":          "8589934592\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":     "2147483648\n",
			"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "max\n"}, 2 << 30, "/sys/fs/cgroup/kubepods/pod1/memory.max"},
		{"v2 no limit: physical memory", map[string]string{
			"proc/self/cgroup": "0::/user.slice\n", "sys/fs/cgroup/user.slice/memory.max": "max\n"}, 16318412 << 10, "physical memory"},
		{"v1 limit", map[string]string{
			"proc/self/cgroup":                           "12:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"}, 512 << 20, "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{"v1 unlimited", map[string]string{
			"proc/self/cgroup":                           "9:memory:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 16318412 << 10, "physical memory"},
		{"limit above physical memory", map[string]string{
			"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "68719476736\n"}, 16318412 << 10, "physical memory"},
		{"garbage", map[string]string{
			"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "lots\n"}, 16318412 << 10, "physical memory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			write(root, "proc/meminfo", meminfo)
			for p, b := range c.files {
				write(root, p, b)
			}
			got, from := memoryLimit(root)
			if got != c.want || from != c.from {
				t.Errorf("got %d from %q, want %d from %q", got, from, c.want, c.from)
			}
		})
	}
	if got, _ := memoryLimit(t.TempDir()); got != 0 {
		t.Errorf("nothing readable: got %d, want 0", got)
	}
}

// fakeBins makes a bin folder whose pg_restore says it is major m, with
// the server programs when server is set.
func fakeBins(t *testing.T, root string, m int, server bool) string {
	t.Helper()
	dir := filepath.Join(root, "postgresql", itoa(m), "bin")
	os.MkdirAll(dir, 0o755)
	progs := []string{"pg_restore", "psql"}
	if server {
		progs = append(progs, "initdb", "pg_ctl", "postgres")
	}
	for _, p := range progs {
		body := "#!/bin/sh\necho '" + p + " (PostgreSQL) " + itoa(m) + ".4'\n"
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestPickBins(t *testing.T) {
	root := t.TempDir()
	d13 := fakeBins(t, root, 13, true)
	d15 := fakeBins(t, root, 15, true)
	d16c := fakeBins(t, root, 16, false) // client only
	d17 := fakeBins(t, root, 17, true)
	b, ok := binsIn([]string{d13, d16c, d15, d17, d15})
	if !ok || b.Dir != d17 || b.Major != 17 || len(b.All) != 4 {
		t.Fatalf("binsIn: %+v", b)
	}
	cases := []struct {
		dump    int
		server  bool
		want    string
		wantErr string
	}{
		{0, true, d17, ""},
		{12, false, d17, ""},
		{16, false, d17, ""},
		{16, true, d17, ""},
		{18, false, "", "install the Debian/PGDG package postgresql-client-18 (PGDG RPM: postgresql18)"},
		{18, true, "", "install the Debian/PGDG package postgresql-18 (PGDG RPM: postgresql18-server)"},
	}
	for _, c := range cases {
		got, err := b.Pick(c.dump, c.server)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "13 (client and server) in "+d13) {
				t.Errorf("Pick(%d, %v): err %v, want %q", c.dump, c.server, err, c.wantErr)
			}
			continue
		}
		if err != nil || got.Dir != c.want {
			t.Errorf("Pick(%d, %v) = %s, %v; want %s", c.dump, c.server, got.Dir, err, c.want)
		}
	}
	// Without 17, a server-side 16 dump needs server programs 16 or newer:
	// the client-only 16 does not do.
	b, _ = binsIn([]string{d13, d15, d16c})
	if got, err := b.Pick(16, false); err != nil || got.Dir != d16c {
		t.Errorf("client 16: %s %v", got.Dir, err)
	}
	if _, err := b.Pick(16, true); err == nil || !strings.Contains(err.Error(), "postgresql-16") {
		t.Errorf("server 16 with only a client 16: %v", err)
	}
	if got, err := b.Pick(14, true); err != nil || got.Dir != d15 {
		t.Errorf("server for a 14 dump: %s %v, want %s (newest with server programs)", got.Dir, err, d15)
	}
	// pg_bin_dir: one installation, and a newer dump names the package.
	one, err := FindBins(d15)
	if err != nil || !one.Server || one.Major != 15 {
		t.Fatalf("FindBins(%s) = %+v, %v", d15, one, err)
	}
	if _, err := one.Pick(17, true); err == nil || !strings.Contains(err.Error(), "postgresql-17") {
		t.Errorf("pg_bin_dir 15, dump 17: %v", err)
	}
}

// hugeLine is a plain dump with one line of n bytes between two small ones.
type hugeLine struct {
	head, tail string
	n, pos     int
}

func (h *hugeLine) Read(p []byte) (int, error) {
	total := len(h.head) + h.n + len(h.tail)
	if h.pos >= total {
		return 0, io.EOF
	}
	i := 0
	for i < len(p) && h.pos < total {
		switch {
		case h.pos < len(h.head):
			p[i] = h.head[h.pos]
		case h.pos < len(h.head)+h.n:
			p[i] = 'x'
		default:
			p[i] = h.tail[h.pos-len(h.head)-h.n]
		}
		i++
		h.pos++
	}
	return i, nil
}

// TestRestrictFilterBoundedMemory: a 256 MiB line costs the filter no more
// than its 64 KiB buffer, not the line (which ReadBytes held whole: 511 MiB
// allocated), and the lines around it are still filtered.
func TestRestrictFilterBoundedMemory(t *testing.T) {
	const n = 256 << 20
	src := &hugeLine{head: "GRANT ALL ON t TO x;\nSELECT '", n: n, tail: "';\nALTER DEFAULT PRIVILEGES FOR ROLE a GRANT ALL ON TABLES TO b;\nREVOKE ALL ON t FROM y;\nSELECT 1;\n"}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var tailBuf bytes.Buffer
	out := &countTail{tail: &tailBuf}
	start := time.Now()
	if _, err := io.Copy(out, newRestrictFilter(src)); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("256 MiB line: %d KiB allocated in %s", alloc>>10, time.Since(start).Round(time.Millisecond))
	if alloc > 4<<20 {
		t.Errorf("filtering a 256 MiB line allocated %d MiB", alloc>>20)
	}
	if want := int64(len("SELECT '") + n + len("';\nSELECT 1;\n")); out.n != want {
		t.Errorf("passed %d bytes, want %d", out.n, want)
	}
	if !strings.HasSuffix(tailBuf.String(), "';\nSELECT 1;\n") {
		t.Errorf("the lines after the long one were not filtered: %q", tailBuf.String())
	}
}

type countTail struct {
	n    int64
	tail *bytes.Buffer
}

func (c *countTail) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if bytes.IndexByte(p, 'x') < 0 || len(p) < 64 {
		c.tail.Write(p)
	} else if i := bytes.LastIndexByte(p, 'x'); i < len(p)-1 {
		c.tail.Write(p[i+1:])
	}
	return len(p), nil
}

func TestRestrictFilterDropsPrivilegesOutsideCopy(t *testing.T) {
	in := "SET x = 1;\nALTER TABLE t OWNER TO bob;\nALTER DEFAULT PRIVILEGES FOR ROLE bob IN SCHEMA public GRANT SELECT ON TABLES TO alice;\n" +
		"COPY t (a) FROM stdin;\nGRANT ALL ON t TO x;\n\\.\nGRANT ALL ON t TO x;\n\\restrict abc\nSELECT 2;\n"
	got, _ := io.ReadAll(newRestrictFilter(strings.NewReader(in)))
	want := "SET x = 1;\nCOPY t (a) FROM stdin;\nGRANT ALL ON t TO x;\n\\.\nSELECT 2;\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defgh", "ij", "0123456789XY"} {
		tb.Write([]byte(s))
	}
	if tb.String() != "456789XY" {
		t.Errorf("%q", tb.String())
	}
	tb.Write([]byte("z"))
	if tb.String() != "56789XYz" {
		t.Errorf("%q", tb.String())
	}
}

func TestScratchNamesAreUniqueAndFit(t *testing.T) {
	now := time.Unix(1767000000, 0)
	a, b := scratchName("a-b", now), scratchName("a-b", now)
	if a == b || !strings.HasPrefix(a, "backupverify_a_b_1767000000_") {
		t.Errorf("two drills at the same second: %s, %s", a, b)
	}
	long := scratchName(strings.Repeat("t", 80), now)
	if len(long) > 63 || !strings.HasSuffix(long, long[len(long)-8:]) || long[len(long)-9] != '_' {
		t.Errorf("long target: %q (%d bytes)", long, len(long))
	}
}

func TestIdentityOK(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"r|d|false", ""},
		{"postgres|d|true", `not "r" in "d"`},
		{"r|crm_prod|false", `in database "crm_prod"`},
		{"r|d|true", "is a superuser"},
		{"", "cannot tell"},
	} {
		err := identityOK(c.line, "r", "d")
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%q: %v, want %q", c.line, err, c.want)
		}
	}
}

func TestParseAdminDSN(t *testing.T) {
	ep, err := parseAdminDSN("postgres://adm:p%40ss@db.example:6432/postgres?sslmode=verify-full&sslrootcert=/etc/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if ep.adminUser != "adm" || ep.adminPassword != "p@ss" || ep.adminDB != "postgres" {
		t.Errorf("admin %+v", ep)
	}
	want := "user='r' dbname='d b' host='db.example' port='6432' sslmode='verify-full' sslrootcert='/etc/ca.pem'"
	if got := ep.connString("r", "d b"); got != want {
		t.Errorf("connString\n got %s\nwant %s", got, want)
	}
	for _, bad := range []string{
		"postgres://verifier@host/postgres?user=postgres&dbname=crm_prod",
		"postgres://verifier@host/postgres?service=prod",
		"postgres://verifier@host/postgres?options=-c%20role%3Dpostgres",
		"postgres://verifier@host/postgres?passfile=/root/.pgpass",
		"postgres://verifier@host/postgres?password=x",
		"postgres://verifier@/postgres",
		"host=x user=y",
	} {
		if _, err := parseAdminDSN(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestSCRAMVerifier(t *testing.T) {
	// RFC 7677's example: user "user", password "pencil", salt
	// W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations; the server signature
	// there is computed from ServerKey, which PostgreSQL stores.
	salt := []byte{0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81}
	got, err := scramVerifierSalt("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$") || strings.Contains(got, "pencil") {
		t.Errorf("verifier %s", got)
	}
}

func TestFirstLinesDropsRowData(t *testing.T) {
	stderr := `psql:<stdin>:41: ERROR:  duplicate key value violates unique constraint "u_email_key"
DETAIL:  Key (email)=(alice@example.com) already exists.
CONTEXT:  COPY u, line 2
psql:<stdin>:7: ERROR:  syntax error at or near "alice@example.com"
LINE 1: SELECT 'x' alice@example.com
                   ^
pg_restore: error: could not execute query: ERROR:  boom
Command was: INSERT INTO u VALUES ('bob@example.com');`
	got := firstLines(stderr, errors.New("exit status 3"))
	for _, secret := range []string{"Key (email)", "COPY u, line 2", "bob@example.com", "LINE 1"} {
		if strings.Contains(got, secret) {
			t.Errorf("firstLines kept %q: %s", secret, got)
		}
	}
	if !strings.Contains(got, `duplicate key value violates unique constraint "u_email_key"`) {
		t.Errorf("firstLines lost the message: %s", got)
	}
}
