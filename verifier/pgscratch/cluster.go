package pgscratch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Cluster is a throwaway PostgreSQL cluster: initdb'd into a folder, listening
// on a Unix socket only, tuned for speed rather than durability.
type Cluster struct {
	Bins      Bins
	Dir       string // data and socket live below it
	Superuser string
	runAs     *syscall.Credential
	started   bool
	socket    string
	// Opened lists folders that were given search permission (o+x) so
	// that the unprivileged user could reach the cluster.
	Opened []string
}

// Port is the socket's port number (part of its file name); there is no TCP.
const Port = 5432

// NewCluster initdb's a cluster below dir. When this process is root the
// cluster belongs to, and runs as, an unprivileged OS user ("postgres", else
// "nobody"), since PostgreSQL refuses to run as root.
func NewCluster(ctx context.Context, bins Bins, dir string) (*Cluster, error) {
	c := &Cluster{Bins: bins, Dir: dir, Superuser: "backupverify", socket: filepath.Join(dir, "socket")}
	if err := os.MkdirAll(c.socket, 0o700); err != nil {
		return nil, err
	}
	// A Unix socket's path is limited to 107 bytes; a deep state_dir or a
	// long target name goes past it. Then the socket lives in a short
	// temporary folder, whose path is recorded for the sweep.
	if len(filepath.Join(c.socket, ".s.PGSQL.5432")) > 100 {
		short, err := os.MkdirTemp("", "bvsock-")
		if err != nil {
			return nil, err
		}
		c.socket = short
		if err := os.WriteFile(filepath.Join(dir, socketPathFile), []byte(short), 0o600); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() == 0 {
		cred, err := unprivileged()
		if err != nil {
			return nil, err
		}
		c.runAs = cred
		if err := chownTree(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
		if err := os.Lchown(c.socket, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
		if c.Opened, err = openParents(dir); err != nil {
			return nil, err
		}
	}
	out, err := c.run(ctx, bins.Path("initdb"), "-D", c.dataDir(), "-U", c.Superuser,
		"-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C")
	if err != nil {
		return nil, fmt.Errorf("initdb %s: %s", c.dataDir(), firstLines(out, err))
	}
	return c, nil
}

// socketPathFile, in a cluster's folder, names a socket folder kept elsewhere.
const socketPathFile = "socket.path"

func (c *Cluster) dataDir() string   { return filepath.Join(c.Dir, "data") }
func (c *Cluster) socketDir() string { return c.socket }

// openCluster describes an existing cluster folder, for the sweep.
func openCluster(bins Bins, dir string) *Cluster {
	c := &Cluster{Bins: bins, Dir: dir, Superuser: "backupverify", socket: filepath.Join(dir, "socket")}
	if b, err := os.ReadFile(filepath.Join(dir, socketPathFile)); err == nil {
		c.socket = string(b)
	}
	if os.Geteuid() == 0 {
		c.runAs, _ = unprivileged()
	}
	_, err := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid"))
	c.started = err == nil
	return c
}

// SocketDir is the folder holding the cluster's Unix socket (libpq's host).
func (c *Cluster) SocketDir() string { return c.socketDir() }

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	opts := fmt.Sprintf("-c listen_addresses='' -k %s -p %d -c fsync=off -c full_page_writes=off "+
		"-c synchronous_commit=off -c wal_level=minimal -c max_wal_senders=0 -c maintenance_work_mem=512MB "+
		"-c max_wal_size=4GB -c checkpoint_timeout=1h -c autovacuum=off", c.socketDir(), Port)
	out, err := c.run(ctx, c.Bins.Path("pg_ctl"), "-D", c.dataDir(), "-o", opts, "-l",
		filepath.Join(c.Dir, "server.log"), "-w", "-t", "60", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
		return fmt.Errorf("start cluster: %s; server log: %s", firstLines(out, err), firstLines(string(log), err))
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
	if !strings.HasPrefix(c.socket, c.Dir) {
		err = errors.Join(err, os.RemoveAll(c.socket))
	}
	return errors.Join(err, os.RemoveAll(c.Dir))
}

// DSN is a libpq connection string for a database of the cluster, over its socket.
func (c *Cluster) DSN(db, user string) string {
	if user == "" {
		user = c.Superuser
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.socketDir(), Port, user, db)
}

// Psql runs psql against a database of the cluster as its superuser.
func (c *Cluster) Psql(ctx context.Context, db string, args ...string) (string, error) {
	all := append([]string{"-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.DSN(db, "")}, args...)
	cmd := command(ctx, c.Bins.Path("psql"), all...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql: %s", firstLines(string(out), err))
	}
	return string(out), nil
}

func (c *Cluster) run(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := command(ctx, prog, args...)
	cmd.SysProcAttr.Credential = c.runAs
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, and there is no unprivileged user (postgres or nobody) to run PostgreSQL as")
}

func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
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
