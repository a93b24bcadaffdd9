package pgscratch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Cluster is a throwaway PostgreSQL cluster: initdb'd into a folder, listening
// on a Unix socket only, tuned for speed rather than durability.
//
// When this process is root the cluster runs as an unprivileged OS user
// (PostgreSQL refuses root), and that user owns only data/, the socket
// folder and server.log: the cluster's folder and the records read back at
// sweep time (owner, socket.path) stay root's, so the cluster user chooses
// nothing that root later deletes.
type Cluster struct {
	Bins      Bins
	Dir       string // data and socket live below it
	Superuser string
	runAs     *syscall.Credential
	started   bool
	socket    string
	settings  []string // name=value server settings
	// Opened lists folders that were given search permission (o+x) so
	// that the unprivileged user could reach the cluster (NewCluster only).
	Opened []string
	// TemplateErr is why the cluster was initdb'd rather than copied from
	// ClusterOptions.Template (nil if it was copied or none was given).
	TemplateErr error
	// FromSpare says the data folder is ClusterOptions.Spare, moved in;
	// SpareErr why it was not (nil if none was given).
	FromSpare bool
	SpareErr  error
}

// superuser is the clusters' bootstrap superuser.
const superuser = "backupverify"

// ClusterOptions shape a cluster made by NewClusterWith.
type ClusterOptions struct {
	// User is the OS user the cluster runs as when this process is root
	// ("": see ClusterUser).
	User string
	// Settings are extra server settings (name → value).
	Settings map[string]string
	// Owner is written to the folder's owner file, so that a sweep can
	// tell its own clusters from others' ("": no file).
	Owner string
	// SocketTag names the short socket folder, bvsock-<tag>-*, if one is
	// needed ("": SocketTag of the cluster folder's parent).
	SocketTag string
	// OpenParents adds search permission (o+x) to the folders above the
	// cluster that lack it, when root. Only for clusters outside a
	// scratch_dir (the quick start's sample, tests); drills never do.
	OpenParents bool
	// Template is the data folder of a template (see Embedded.TemplateDir)
	// to copy instead of running initdb ("": initdb). If the copy fails,
	// initdb runs after all and Cluster.TemplateErr says why.
	Template string
	// Spare is a copy of Template made ahead of time (see
	// Embedded.PrepareSpare), a data folder on the same filesystem that
	// is renamed into the cluster instead of copying Template. If that
	// fails, or it holds anything but folders and regular files, Template
	// is copied after all and Cluster.SpareErr says why.
	Spare string
}

// Port is the socket's port number (part of its file name); there is no TCP.
const Port = 5432

// DefaultClusterUser is the OS user clusters run as when the daemon is root,
// if it exists: an account of their own, which owns nothing else.
const DefaultClusterUser = "backupverify-scratch"

// NewCluster initdb's a cluster below dir, opening dir's parents to the
// cluster user if need be (see ClusterOptions.OpenParents).
func NewCluster(ctx context.Context, bins Bins, dir string) (*Cluster, error) {
	return NewClusterWith(ctx, bins, dir, ClusterOptions{OpenParents: true})
}

// NewClusterWith initdb's a cluster in dir (or copies opt.Template), which
// it creates. On failure,
// nothing it made is left, the short socket folder included.
func NewClusterWith(ctx context.Context, bins Bins, dir string, opt ClusterOptions) (_ *Cluster, err error) {
	c := &Cluster{Bins: bins, Dir: dir, Superuser: superuser, socket: filepath.Join(dir, "socket")}
	for _, k := range sortedKeys(opt.Settings) {
		c.settings = append(c.settings, k+"="+opt.Settings[k])
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if !strings.HasPrefix(c.socket, c.Dir) {
				_ = os.RemoveAll(c.socket)
			}
			_ = os.RemoveAll(dir)
		}
	}()
	if opt.Owner != "" {
		if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(opt.Owner), 0o600); err != nil {
			return nil, err
		}
	}
	// A Unix socket's path is limited to 107 bytes; a deep scratch folder
	// or a long target name goes past it. Then the socket lives in a short
	// temporary folder, whose path is recorded for the sweep.
	if len(filepath.Join(c.socket, ".s.PGSQL.5432")) > 100 {
		tag := opt.SocketTag
		if tag == "" {
			tag = SocketTag(filepath.Dir(dir))
		}
		short, err := os.MkdirTemp("", "bvsock-"+tag+"-")
		if err != nil {
			return nil, err
		}
		c.socket = short
		if err := os.WriteFile(filepath.Join(dir, socketPathFile), []byte(short), 0o600); err != nil {
			return nil, err
		}
	} else if err := os.Mkdir(c.socket, 0o700); err != nil {
		return nil, err
	}
	// A spare moves in while the cluster folder is this process's and
	// 0700, and is handed over below, as a copy of the template is.
	if opt.Spare != "" {
		if c.SpareErr = os.Rename(opt.Spare, c.dataDir()); c.SpareErr == nil {
			c.FromSpare = true
		}
	}
	if !c.FromSpare {
		if err := os.Mkdir(c.dataDir(), 0o700); err != nil {
			return nil, err
		}
	}
	logf, err := os.OpenFile(c.logFile(), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	logf.Close()
	if os.Geteuid() == 0 {
		if c.runAs, _, err = ClusterUser(opt.User); err != nil {
			return nil, err
		}
	}
	// The copy is made while data/ is still this process's and 0700, so
	// that no one else can touch it before it is whole; then handed over.
	// A data folder that could not be handed over or copied is emptied
	// for the next way.
	emptyData := func() error {
		if err := os.RemoveAll(c.dataDir()); err != nil {
			return err
		}
		return os.Mkdir(c.dataDir(), 0o700)
	}
	copied := false
	if c.FromSpare {
		if err := handOver(c.dataDir(), c.runAs); err != nil {
			c.FromSpare, c.SpareErr = false, err
			if err := emptyData(); err != nil {
				return nil, err
			}
		} else {
			copied = true
		}
	}
	if opt.Template != "" && !copied {
		if err := copyTree(opt.Template, c.dataDir(), c.runAs); err != nil {
			c.TemplateErr = err
			if err := emptyData(); err != nil {
				return nil, err
			}
		} else {
			copied = true
		}
	}
	if cred := c.runAs; cred != nil {
		// The folder stays root's: the cluster user may pass through it,
		// and owns only what the server writes.
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, err
		}
		for _, p := range []string{c.dataDir(), c.socket, c.logFile()} {
			if err := os.Lchown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
		if opt.OpenParents {
			if c.Opened, err = openParents(dir); err != nil {
				return nil, err
			}
		}
	}
	if copied {
		return c, nil
	}
	out, err := c.run(ctx, bins.Path("initdb"), append([]string{"-D", c.dataDir()}, initdbArgs(c.Superuser)...)...)
	if err != nil {
		return nil, fmt.Errorf("initdb %s: %s", c.dataDir(), firstLines(out, err))
	}
	return c, nil
}

// SocketTag is the tag of the short socket folders of clusters made below
// parent, by which a sweep or a test finds them.
func SocketTag(parent string) string {
	h := sha256.Sum256([]byte(parent))
	return hex.EncodeToString(h[:4])
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Records in a cluster's folder, written by this process: socket.path names
// a socket folder kept elsewhere; owner holds the mark of the daemon
// instance that made the cluster.
const (
	socketPathFile = "socket.path"
	ownerFile      = "owner"
)

func (c *Cluster) dataDir() string   { return filepath.Join(c.Dir, "data") }
func (c *Cluster) socketDir() string { return c.socket }
func (c *Cluster) logFile() string   { return filepath.Join(c.Dir, "server.log") }

// ownRecord reads a record file of a cluster folder if this process wrote
// it: a regular file (no symlink), owned by this process's user, small.
func ownRecord(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || !ok || int(st.Uid) != os.Geteuid() || fi.Size() > 4096 {
		return "", fmt.Errorf("%s is not a file this process wrote", path)
	}
	b, err := os.ReadFile(path)
	return string(b), err
}

// validSocketDir says whether a socket folder read back from socket.path
// is one NewClusterWith makes: a bvsock-* folder right in the temporary
// folder. Anything else is never deleted.
func validSocketDir(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p &&
		filepath.Dir(p) == filepath.Clean(os.TempDir()) && strings.HasPrefix(filepath.Base(p), "bvsock-")
}

// openCluster describes an existing cluster folder, for the sweep. Its
// socket record is trusted only if it is this process's own file naming a
// folder NewClusterWith would make.
func openCluster(bins Bins, dir, runAs string) (*Cluster, error) {
	c := &Cluster{Bins: bins, Dir: dir, Superuser: superuser, socket: filepath.Join(dir, "socket")}
	if _, err := os.Lstat(filepath.Join(dir, socketPathFile)); err == nil {
		p, err := ownRecord(filepath.Join(dir, socketPathFile))
		if err != nil {
			return nil, err
		}
		if !validSocketDir(p) {
			return nil, fmt.Errorf("%s names %q, not a socket folder of ours", filepath.Join(dir, socketPathFile), p)
		}
		c.socket = p
	}
	if os.Geteuid() == 0 {
		c.runAs, _, _ = ClusterUser(runAs)
	}
	_, err := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid"))
	c.started = err == nil
	return c, nil
}

// SocketDir is the folder holding the cluster's Unix socket (libpq's host).
func (c *Cluster) SocketDir() string { return c.socketDir() }

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	// pg_ctl hands -o to a shell: every value is quoted.
	opts := fmt.Sprintf("-c listen_addresses='' -k %s -p %d -c fsync=off -c full_page_writes=off "+
		"-c synchronous_commit=off -c wal_level=minimal -c max_wal_senders=0 "+
		"-c max_wal_size=4GB -c checkpoint_timeout=1h -c autovacuum=off", shellQuote(c.socketDir()), Port)
	for _, kv := range c.settings {
		opts += " -c " + shellQuote(kv)
	}
	out, err := c.run(ctx, c.Bins.Path("pg_ctl"), "-D", c.dataDir(), "-o", opts, "-l",
		c.logFile(), "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("start cluster: %s; server log: %s", firstLines(out, err), firstLines(c.logTail(), err))
	}
	c.started = true
	return nil
}

// Stop stops the server at once (it holds nothing worth a clean shutdown).
// It goes by the server's postmaster.pid, not by whether Start returned:
// pg_ctl detaches the server (setsid), so a start cancelled midway can leave
// one running.
func (c *Cluster) Stop(ctx context.Context) error {
	pidFile := filepath.Join(c.dataDir(), "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil && !c.started {
		return nil
	}
	out, err := c.run(ctx, c.Bins.Path("pg_ctl"), "-D", c.dataDir(), "-m", "immediate", "-w", "stop")
	if _, statErr := os.Stat(pidFile); err != nil && statErr == nil {
		return fmt.Errorf("stop cluster: %s", firstLines(out, err))
	}
	c.started = false
	return nil
}

// Remove stops the server if need be and deletes the cluster's folder.
func (c *Cluster) Remove(ctx context.Context) error {
	err := c.Stop(ctx)
	if !strings.HasPrefix(c.socket, c.Dir+string(filepath.Separator)) {
		err = errors.Join(err, os.RemoveAll(c.socket))
	}
	return errors.Join(err, os.RemoveAll(c.Dir))
}

// DSN is a libpq connection string for a database of the cluster, over its socket.
func (c *Cluster) DSN(db, user string) string {
	if user == "" {
		user = c.Superuser
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		quoteConnValue(c.socketDir()), Port, quoteConnValue(user), quoteConnValue(db))
}

// PID is the server's process id, from its postmaster.pid (0 when stopped).
func (c *Cluster) PID() int {
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid
}

// logTail is the end of the server's log, read with a bound (the cluster
// user writes it).
func (c *Cluster) logTail() string {
	f, err := os.Open(c.logFile())
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 8192 {
		_, _ = f.Seek(-8192, io.SeekEnd)
	}
	b, _ := io.ReadAll(io.LimitReader(f, 8192))
	return string(b)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// clusterEnv is the whole environment of initdb, pg_ctl and the server:
// nothing of the daemon's (no AWS credentials, no trigger token, no PG*).
// The one exception is nss_wrapper's, for a daemon (not root) running under
// a UID with no passwd entry, as the image's entry point sets up on
// OpenShift: initdb must look its own user up, and runs as the daemon.
func clusterEnv() []string {
	env := []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C", "TZ=UTC"}
	if os.Geteuid() != 0 && strings.Contains(os.Getenv("LD_PRELOAD"), "nss_wrapper") {
		for _, k := range []string{"LD_PRELOAD", "NSS_WRAPPER_PASSWD", "NSS_WRAPPER_GROUP"} {
			if v, ok := os.LookupEnv(k); ok {
				env = append(env, k+"="+v)
			}
		}
	}
	return env
}

// Psql runs psql against a database of the cluster as its superuser.
func (c *Cluster) Psql(ctx context.Context, db string, args ...string) (string, error) {
	all := append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.DSN(db, "")}, args...)
	cmd := command(ctx, c.Bins.Path("psql"), all...)
	cmd.Env = toolEnv("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql: %s", firstLines(string(out), err))
	}
	return string(out), nil
}

func (c *Cluster) run(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := command(ctx, prog, args...)
	cmd.SysProcAttr.Credential = c.runAs
	cmd.Env = clusterEnv()
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ClusterUser is the OS user clusters run as when this process is root:
// name if given (it must exist and not be root); else DefaultClusterUser if
// it exists; else "nobody", which other daemons share (fallback says so).
// Never "postgres", which owns the host's real clusters.
func ClusterUser(name string) (cred *syscall.Credential, fallback bool, err error) {
	names := []string{name}
	if name == "" {
		names = []string{DefaultClusterUser, "nobody"}
	}
	for i, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if uid == 0 {
			return nil, false, fmt.Errorf("drills.scratch_user %s is root; PostgreSQL must run unprivileged", n)
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name == "" && i > 0, nil
	}
	if name != "" {
		return nil, false, fmt.Errorf("drills.scratch_user %s: no such OS user", name)
	}
	return nil, false, fmt.Errorf("running as root, and there is no unprivileged user (%s or nobody) to run PostgreSQL as: create one with `useradd --system --no-create-home --shell /usr/sbin/nologin %s`", DefaultClusterUser, DefaultClusterUser)
}

// openParents lets the unprivileged user reach dir through folders such as
// a 0700 temporary directory, by adding search (x) permission only: no one
// can list or read them for it. It returns the folders it changed.
func openParents(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var opened []string
	for p := filepath.Dir(abs); p != "/"; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return opened, err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
				return opened, err
			}
			opened = append(opened, p)
		}
	}
	return opened, nil
}
