package deploy

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/internal/testenv"
)

// dockerfile is deploy/Dockerfile's instructions, continuation lines joined
// and comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out
}

// TestDockerfile checks what a drill in the image depends on and no Docker
// engine here can show: a passwd entry for the image's user, nss_wrapper and
// the entry point for any other UID, several PostgreSQL majors, a config
// reachable through `docker run -p`, and a build context holding what the
// build copies.
func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	all := strings.Join(ins, "\n")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`useradd [^\n]*--uid 10001 [^\n]*--home-dir /var/lib/backupverify`),
		regexp.MustCompile(`groupadd [^\n]*--gid 10001`),
		regexp.MustCompile(`(?m)^USER 10001:10001$`),
		regexp.MustCompile(`apt-get install [^\n]*libnss-wrapper`),
		regexp.MustCompile(`(?m)^ARG PG_MAJORS="(\d+ )+\d+"$`),
		regexp.MustCompile(`for m in \$PG_MAJORS; do pkgs="\$pkgs postgresql-\$m postgresql-client-\$m"`),
		regexp.MustCompile(`create_main_cluster = false`),
		regexp.MustCompile(`(?m)^COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh$`),
		regexp.MustCompile(`(?m)^ENTRYPOINT \["/usr/local/bin/docker-entrypoint.sh"\]$`),
		regexp.MustCompile(`(?m)^COPY deploy/examples/container.yml /etc/backupverify/backupverify.yml$`),
		regexp.MustCompile(`-X github.com/prometheus/common/version.Version=\$\{VERSION\}`),
	} {
		if !want.MatchString(all) {
			t.Errorf("the Dockerfile does not match %s", want)
		}
	}
	// The newest major comes first: it is the default reader.
	m := regexp.MustCompile(`(?m)^ARG PG_MAJORS="([\d ]+)"$`).FindStringSubmatch(all)
	if m != nil {
		prev := 1 << 30
		for _, f := range strings.Fields(m[1]) {
			n, _ := strconv.Atoi(f)
			if n >= prev || n < 13 {
				t.Errorf("PG_MAJORS %q: want supported majors, newest first", m[1])
			}
			prev = n
		}
	}
	// The Go version the image builds with is the one go.mod requires.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVer := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVer == nil || !strings.Contains(all, "ARG GO_VERSION="+string(goVer[1])+"\n") {
		t.Errorf("the Dockerfile's GO_VERSION is not go.mod's %s", goVer[1])
	}

	c, err := config.Load("examples/container.yml")
	if err != nil {
		t.Fatalf("the image's config: %v", err)
	}
	if host, _, _ := strings.Cut(c.Listen, ":"); host != "" && host != "0.0.0.0" && host != "[::]" {
		t.Errorf("the image's config listens on %q: `docker run -p` cannot reach it", c.Listen)
	}
	if c.StateDir != "/var/lib/backupverify" {
		t.Errorf("the image's state_dir %s is not its volume", c.StateDir)
	}

	// Every file COPY takes from the build context survives .dockerignore.
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		f := strings.Fields(in)
		if f[0] != "COPY" || strings.HasPrefix(f[1], "--from") {
			continue
		}
		for _, src := range f[1 : len(f)-1] {
			if src != "." && dockerIgnored(string(ignore), src) {
				t.Errorf(".dockerignore leaves %s out of the build context, and the Dockerfile copies it", src)
			}
		}
	}
	for _, p := range []string{".git/HEAD", "bin/backupverify", "testdata/pagila/pagila-data.sql", "deploy/kubernetes/pvc.yaml"} {
		if !dockerIgnored(string(ignore), p) {
			t.Errorf(".dockerignore sends %s to the build context", p)
		}
	}
}

// dockerIgnored applies .dockerignore's patterns (last match wins, ! re-includes,
// a pattern matches a path or any folder above it) to a path of the context.
func dockerIgnored(rules, path string) bool {
	ignored := false
	for _, line := range strings.Split(rules, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		neg := strings.HasPrefix(line, "!")
		pat := strings.TrimPrefix(line, "!")
		for p := path; p != "."; p = filepath.Dir(p) {
			if globMatch(pat, p) {
				ignored = !neg
				break
			}
		}
	}
	return ignored
}

// globMatch is filepath.Match with "**/" matching any number of folders.
func globMatch(pat, p string) bool {
	if rest, ok := strings.CutPrefix(pat, "**/"); ok {
		for q := p; ; {
			if ok, _ := filepath.Match(rest, q); ok {
				return true
			}
			i := strings.Index(q, "/")
			if i < 0 {
				return false
			}
			q = q[i+1:]
		}
	}
	ok, _ := filepath.Match(pat, p)
	return ok
}

// TestDrillUnderArbitraryUID runs `backupverify drill` with embedded scratch
// as a UID that has no passwd entry (OpenShift's arbitrary UIDs, `docker run
// --user`), through the image's entry point: initdb and postgres run as that
// UID and need nss_wrapper to find a user name. Without the entry point the
// same drill fails in initdb, which shows what the entry point is for.
func TestDrillUnderArbitraryUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching to another UID with setpriv needs root")
	}
	setpriv := tool(t, "setpriv")
	if m, _ := filepath.Glob("/usr/lib/*/libnss_wrapper.so"); len(m) == 0 {
		t.Fatal("libnss_wrapper.so is required (Debian package libnss-wrapper; make test installs it)")
	}
	uid := 54321
	for ; ; uid++ {
		if _, err := user.LookupId(strconv.Itoa(uid)); err != nil {
			break
		}
	}

	// A folder every UID can reach; what the UID writes is its own.
	dir, err := os.MkdirTemp("", "bvuid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	buildDaemon(t, dir)
	script, err := os.ReadFile("docker-entrypoint.sh")
	if err != nil {
		t.Fatal(err)
	}
	entry := filepath.Join(dir, "docker-entrypoint.sh")
	if err := os.WriteFile(entry, script, 0o755); err != nil {
		t.Fatal(err)
	}

	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 200)
	backups := filepath.Join(dir, "backups")
	if err := os.Mkdir(backups, 0o755); err != nil {
		t.Fatal(err)
	}
	pg.Dump(t, "crm", "c", filepath.Join(backups, "crm.dump"))
	if err := os.Chmod(filepath.Join(backups, "crm.dump"), 0o644); err != nil {
		t.Fatal(err)
	}

	drill := func(t *testing.T, name string, viaEntrypoint bool) (string, error) {
		home := filepath.Join(dir, name)
		for _, d := range []string{home, filepath.Join(home, "tmp")} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		cfg := filepath.Join(dir, name+".yml")
		os.WriteFile(cfg, fmt.Appendf(nil, "state_dir: %s/state\ntargets:\n  - name: crm\n    source: file://%s/\n    checksum: none\n    checks:\n      - count: leads\n        min: 1\n",
			home, backups), 0o644)
		args := []string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(uid), "--clear-groups"}
		if viaEntrypoint {
			args = append(args, "/bin/sh", entry)
		} else {
			args = append(args, filepath.Join(dir, "backupverify"))
		}
		args = append(args, "drill", "--config", cfg, "--log-format", "json")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, setpriv, args...)
		// As a container starts: a PATH holding the binary, HOME, a writable TMPDIR.
		cmd.Env = []string{"PATH=" + dir + ":/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "TMPDIR=" + filepath.Join(home, "tmp")}
		out, err := cmd.CombinedOutput()
		// Clusters must go; the spare copy of the template, made for the
		// next drill, stays.
		if left, _ := filepath.Glob(filepath.Join(home, "state", "scratch", "backupverify_*")); len(left) > 0 {
			t.Errorf("the drill left scratch behind: %v", left)
		}
		return string(out), err
	}

	t.Run("entrypoint", func(t *testing.T) {
		out, err := drill(t, "viaentry", true)
		if err != nil || !strings.Contains(out, "## 1. Outcome: PASS") {
			t.Fatalf("drill as UID %d through docker-entrypoint.sh: %v\n%s", uid, err, out)
		}
		if !strings.Contains(out, "leads") {
			t.Errorf("the report does not show the check:\n%s", out)
		}
	})
	t.Run("without entrypoint", func(t *testing.T) {
		out, err := drill(t, "direct", false)
		if err == nil || !strings.Contains(out, fmt.Sprintf("could not look up effective user ID %d", uid)) {
			t.Fatalf("want initdb to fail for a UID without passwd entry, got %v\n%s", err, out)
		}
	})
}
