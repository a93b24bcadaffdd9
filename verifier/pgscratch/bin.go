// Package pgscratch runs PostgreSQL for backupverify: reading archives with
// pg_restore, restoring them with pg_restore or psql into a scratch database
// (a throwaway cluster, or a dedicated server), and querying it over pgx.
// Of the daemon's packages it alone imports pgx and runs programs; the quick
// start also runs pg_dump, and the tests' internal/testenv runs PostgreSQL.
package pgscratch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bins is one PostgreSQL installation's bin folder.
type Bins struct {
	Dir   string
	Major int
	// Server says it has the server programs (initdb, pg_ctl, postgres)
	// an embedded scratch cluster needs, not only the client ones.
	Server bool
	// All are every installation found, newest first (this one among
	// them); empty when pg_bin_dir names one.
	All []Bins
}

// Path returns the path of one of its programs.
func (b Bins) Path(prog string) string { return filepath.Join(b.Dir, prog) }

// searchGlobs are the usual install paths, newest major first once sorted.
var searchGlobs = []string{
	"/usr/lib/postgresql/*/bin", // Debian, Ubuntu
	"/usr/pgsql-*/bin",          // PGDG RPMs
	"/usr/local/pgsql*/bin",     // source builds
	"/opt/homebrew/opt/postgresql@*/bin",
	"/usr/local/opt/postgresql@*/bin",
}

// FindBins returns the PostgreSQL installation to use: dir when set,
// else the highest major among the usual install paths, pg_config's bindir
// and $PATH, with every other one found in All. An archive needs a
// pg_restore at least as new as its pg_dump, so the newest one wins; Pick
// chooses per archive.
func FindBins(dir string) (Bins, error) {
	if dir != "" {
		major, err := majorOf(filepath.Join(dir, "pg_restore"))
		if err != nil {
			return Bins{}, fmt.Errorf("pg_bin_dir %s: %w", dir, err)
		}
		return Bins{Dir: dir, Major: major, Server: hasServer(dir)}, nil
	}
	var cands []string
	for _, g := range searchGlobs {
		m, _ := filepath.Glob(g)
		cands = append(cands, m...)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		cands = append(cands, strings.TrimSpace(string(out)))
	}
	if p, err := exec.LookPath("pg_restore"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		cands = append(cands, filepath.Dir(p))
	}
	b, ok := binsIn(cands)
	if !ok {
		return Bins{}, errors.New("no PostgreSQL client programs found (looked for pg_restore in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, pg_config --bindir and $PATH); install PostgreSQL's client and server packages or set pg_bin_dir")
	}
	return b, nil
}

// binsIn describes the installations in dirs (duplicates dropped): the
// newest, with every one in All.
func binsIn(dirs []string) (Bins, bool) {
	var found []Bins
	seen := map[string]bool{}
	for _, d := range dirs {
		if r, err := filepath.EvalSymlinks(d); err == nil {
			d = r
		}
		if seen[d] {
			continue
		}
		seen[d] = true
		if m, err := majorOf(filepath.Join(d, "pg_restore")); err == nil {
			found = append(found, Bins{Dir: d, Major: m, Server: hasServer(d)})
		}
	}
	if len(found) == 0 {
		return Bins{}, false
	}
	// Newest first; of one major, the one with server programs first.
	sort.SliceStable(found, func(i, j int) bool {
		if found[i].Major != found[j].Major {
			return found[i].Major > found[j].Major
		}
		return found[i].Server && !found[j].Server
	})
	b := found[0]
	b.All = found
	return b, true
}

func hasServer(dir string) bool {
	for _, p := range []string{"initdb", "pg_ctl", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Pick returns the installation to restore an archive made by pg_dump of
// major dumpMajor (0: unknown) with: the newest installed of that major or
// newer, with the server programs when server is set (embedded scratch). A
// missing major fails with the Debian/PGDG package that provides it.
func (b Bins) Pick(dumpMajor int, server bool) (Bins, error) {
	all := b.All
	if len(all) == 0 {
		all = []Bins{b}
	}
	var have []string
	for _, c := range all {
		if c.Major >= dumpMajor && (c.Server || !server) {
			c.All = b.All
			return c, nil
		}
		kind := "client"
		if c.Server {
			kind = "client and server"
		}
		have = append(have, fmt.Sprintf("%d (%s) in %s", c.Major, kind, c.Dir))
	}
	what, pkg, rpm := "client programs (pg_restore, psql)", fmt.Sprintf("postgresql-client-%d", dumpMajor), fmt.Sprintf("postgresql%d", dumpMajor)
	if server {
		what, pkg, rpm = "server programs (initdb, pg_ctl, postgres) for embedded scratch", fmt.Sprintf("postgresql-%d", dumpMajor), fmt.Sprintf("postgresql%d-server", dumpMajor)
	}
	return Bins{}, fmt.Errorf("restoring it needs PostgreSQL %d or newer %s; found %s: install the Debian/PGDG package %s (PGDG RPM: %s), or point pg_bin_dir at one",
		dumpMajor, what, strings.Join(have, ", "), pkg, rpm)
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.\d+)?`)

func majorOf(prog string) (int, error) {
	out, err := exec.Command(prog, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("run %s --version: %w", prog, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s --version said %q", prog, strings.TrimSpace(string(out)))
	}
	return strconv.Atoi(string(m[1]))
}

// ArchiveReader reads custom-format archives with `pg_restore -f /dev/null`,
// which reads every data block (and catches truncation that --list misses)
// without restoring anything.
type ArchiveReader struct {
	Bins Bins
}

// ReadArchive implements verifier.ArchiveReader. It feeds r to pg_restore
// itself rather than through exec's own copy: pg_restore exits at the
// archive's end, and exec's copy, still blocked reading a slow source, would
// outlive WaitDelay (a false "unreadable" verdict) and then race the
// caller's reads of r. Here it returns only once nothing reads r any more.
func (a ArchiveReader) ReadArchive(ctx context.Context, r io.Reader) error {
	cmd := command(ctx, a.Bins.Path("pg_restore"), "-f", os.DevNull)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stderr := &limitedBuffer{max: 4096}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start pg_restore: %w", err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		// Stops at the end of r, or when pg_restore has exited (EPIPE).
		_, _ = io.Copy(stdin, r)
		stdin.Close()
	}()
	err = cmd.Wait()
	<-copied
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("pg_restore %d: %s", a.Bins.Major, firstLines(stderr.String(), err))
	}
	return nil
}

// command runs prog in its own process group, so that cancelling ctx kills
// it and every child it started, and never waits on pipes forever.
func command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, prog, args...)
	// Its own group, so a deadline kills it with every child; and killed
	// with us, so a SIGKILLed daemon leaves no restore running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// firstLines condenses a program's stderr into one message. The server's
// DETAIL, CONTEXT and LINE lines (and pg_restore's "Command was:") are
// dropped first: they carry row data such as "Key (email)=(alice@example.com)"
// and statement text, which must not leave the drill.
func firstLines(stderr string, err error) string {
	var kept []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if !rowDataLine.MatchString(l) {
			kept = append(kept, l)
		}
	}
	s := strings.TrimSpace(strings.Join(kept, "\n"))
	if s == "" {
		return err.Error()
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = append(lines[:3], fmt.Sprintf("(%d more lines)", len(lines)-3))
	}
	return strings.Join(lines, "; ")
}

// rowDataLine matches a server message's DETAIL, CONTEXT, QUERY or LINE part,
// with or without psql's "psql:<stdin>:N: " prefix, pg_restore's "Command
// was:", and the caret line under a LINE part.
var rowDataLine = regexp.MustCompile(`^\s*(?:psql:[^:]*:\d+:\s*)?(?:DETAIL:|CONTEXT:|QUERY:|LINE \d+:|Command was:|\^\s*$)`)

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.Len(); room > 0 {
		if len(p) > room {
			l.Buffer.Write(p[:room])
		} else {
			l.Buffer.Write(p)
		}
	}
	return len(p), nil
}
