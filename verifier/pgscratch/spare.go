package pgscratch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A spare is a copy of the template made ahead of time, so that a drill
// renames it into place instead of copying about a thousand files (whose
// inode allocation costs 0.15 to 1.5 s) while its backup downloads. Each
// instance keeps at most one, <Dir>/.spare-<socket tag>/ (not DBPrefix:
// the cluster sweep never mistakes it for a cluster): a folder of the
// daemon's user with mode 0700, as the template (as root the cluster user
// cannot reach it while it waits), holding data/ and a key file, written
// last: a spare is complete, and used, only if the key file is there and
// holds the current template's stamp (its key, and which folder it is: a
// template made again with the same key has another). It is in Dir, on
// the clusters' filesystem, so that os.Rename moves it.
const (
	sparePrefix  = ".spare-"
	spareKeyFile = "key"
)

// spareLocks serialise making, using and sweeping a spare folder: the
// Embedded values of one instance (one per target) share it. Other
// processes of the instance are kept away by the daemon's lock on
// state_dir.
var spareLocks sync.Map // spare folder → *sync.Mutex

// spareWG tracks the spares being made in the background, by every
// Embedded of the process (a daemon has one per target).
var spareWG sync.WaitGroup

// sparesMade lists the spare folders this process made (RemoveSpares).
var sparesMade sync.Map // spare folder → struct{}

// RemoveSpares waits for the spares being made in the background and
// removes every spare this process made: for tests, whose state_dir (and
// so instance id) is thrown away while scratch_dir, as root
// /var/tmp/backupverify, stays.
func RemoveSpares() {
	spareWG.Wait()
	sparesMade.Range(func(k, _ any) bool {
		mu, _ := spareLocks.LoadOrStore(k, &sync.Mutex{})
		mu.(*sync.Mutex).Lock()
		_ = os.RemoveAll(k.(string))
		mu.(*sync.Mutex).Unlock()
		return true
	})
}

func (e *Embedded) spareDir() string { return filepath.Join(e.Dir, sparePrefix+e.socketTag()) }

func (e *Embedded) spareLock() *sync.Mutex {
	m, _ := spareLocks.LoadOrStore(e.spareDir(), &sync.Mutex{})
	return m.(*sync.Mutex)
}

// spareKey is the key of the spare if it is complete: a folder of this
// process's user, not a symlink, whose key file this process wrote, and a
// data folder ("" if any of that is missing).
func (e *Embedded) spareKey() string {
	dir := e.spareDir()
	fi, err := os.Lstat(dir)
	if err != nil {
		return ""
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || st == nil || int(st.Uid) != os.Geteuid() || fi.Mode().Perm() != 0o700 {
		return ""
	}
	if fi, err := os.Lstat(filepath.Join(dir, "data")); err != nil || !fi.IsDir() {
		return ""
	}
	key, err := ownRecord(filepath.Join(dir, spareKeyFile))
	if err != nil {
		return ""
	}
	return key
}

// spareStamp is what the key file of a spare copied from the template
// folder tpl (its data folder) with key holds: the key, and the
// template's folder by inode and change time ("" if it cannot be told).
func spareStamp(tpl, key string) string {
	var st syscall.Stat_t
	if tpl == "" || key == "" || syscall.Lstat(filepath.Dir(tpl), &st) != nil {
		return ""
	}
	return fmt.Sprintf("%stemplate %d %d %d.%09d\ntemplate_dir %q\n", key, st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec, filepath.Dir(tpl))
}

// dropCopies removes the template and the spare copied from it, when a
// cluster copied from them did not start.
func (e *Embedded) dropCopies() {
	mu := e.spareLock()
	mu.Lock()
	if err := os.RemoveAll(e.spareDir()); err != nil {
		e.Log.Warn("remove the spare scratch cluster", "dir", e.spareDir(), "err", err)
	}
	mu.Unlock()
	lock, err := e.lockTemplates()
	if err != nil {
		e.warnTemplate(err)
		return
	}
	defer lock.Close()
	if err := e.cleanTemplates(true); err != nil {
		e.warnTemplate(err)
	}
}

// sweepOrphanSpares removes the spares of other daemons whose template
// folder is gone (their state_dir was deleted: a test, a one-off run with a
// throwaway state_dir), which nothing else would ever remove. Only folders
// of this process's user with a key file it could have written are read.
func (e *Embedded) sweepOrphanSpares() error {
	ents, err := os.ReadDir(e.Dir)
	if err != nil {
		return nil
	}
	var errs []error
	for _, ent := range ents {
		dir := filepath.Join(e.Dir, ent.Name())
		if !ent.IsDir() || !strings.HasPrefix(ent.Name(), sparePrefix) || dir == e.spareDir() {
			continue
		}
		key, err := ownRecord(filepath.Join(dir, spareKeyFile))
		if err != nil {
			continue
		}
		tdir, ok := spareTemplateDir(key)
		if !ok {
			continue
		}
		if _, err := os.Lstat(tdir); errors.Is(err, os.ErrNotExist) {
			e.Log.Info("removing the spare scratch cluster of a daemon whose template is gone", "dir", dir, "template", tdir)
			errs = append(errs, os.RemoveAll(dir))
		}
	}
	return errors.Join(errs...)
}

// spareTemplateDir is the template folder a spare's key names.
func spareTemplateDir(key string) (string, bool) {
	for _, line := range strings.Split(key, "\n") {
		if rest, ok := strings.CutPrefix(line, "template_dir "); ok {
			p, err := strconv.Unquote(rest)
			return p, err == nil && filepath.IsAbs(p)
		}
	}
	return "", false
}

// PrepareSpare makes the spare if there is a template and no complete
// spare of its key, replacing an incomplete or stale one. Nothing is made
// while the template is being built (errTemplateBusy, not an error here).
func (e *Embedded) PrepareSpare(ctx context.Context) error {
	if e.TemplateDir == "" {
		return nil
	}
	bins, err := e.Bins.Pick(0, true)
	if err != nil {
		return err
	}
	mu := e.spareLock()
	mu.Lock()
	defer mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	tpl, key, err := e.template(bins)
	if err != nil || tpl == "" {
		return err
	}
	stamp := spareStamp(tpl, key)
	if stamp == "" || e.spareKey() == stamp {
		return nil
	}
	if err := e.prepare(); err != nil {
		return err
	}
	// The template's lock keeps a rebuild from removing it under the copy.
	return e.unlessBuilding(func() error { return e.copySpare(tpl, stamp) })
}

// copySpare makes the spare: a copy of tpl, its key file (stamp) last.
func (e *Embedded) copySpare(tpl, stamp string) error {
	dir := e.spareDir()
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	sparesMade.Store(dir, struct{}{})
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
		return err
	}
	if err := copyTree(tpl, filepath.Join(dir, "data"), nil); err != nil {
		return errors.Join(fmt.Errorf("spare: %w", err), os.RemoveAll(dir))
	}
	return os.WriteFile(filepath.Join(dir, spareKeyFile), []byte(stamp), 0o600)
}

// PrepareSpareLater starts PrepareSpare in the background: after a drill's
// cluster is closed, and after the daemon's start-up sweep. WaitSpares
// waits for it.
func (e *Embedded) PrepareSpareLater() {
	spareWG.Add(1)
	go func() {
		defer spareWG.Done()
		if err := e.PrepareSpare(context.Background()); err != nil {
			e.spareWarn.Do(func() {
				e.Log.Warn("no spare scratch cluster made ahead of time (the next drill copies the template, slower; nothing else changes)",
					"dir", e.spareDir(), "err", err)
			})
		}
	}()
}

// WaitSpares waits until the spares started in the background (by any
// Embedded of the process) are made, so that a `backupverify drill` leaves
// one for the next run and a daemon stops with none half made.
func WaitSpares() { spareWG.Wait() }

// Wait is WaitSpares.
func (e *Embedded) Wait() { WaitSpares() }

// takeSpare claims the spare if it is complete and of stamp: its key file is
// removed first (what is left is incomplete, and the sweep or the next
// PrepareSpare removes it), and its data folder, to be renamed into a
// cluster, is returned with a func removing what is left of the spare.
// If the spare is being made, there is none to take.
func (e *Embedded) takeSpare(stamp string) (data string, done func()) {
	mu := e.spareLock()
	if stamp == "" || !mu.TryLock() {
		return "", func() {}
	}
	dir := e.spareDir()
	if e.spareKey() != stamp || os.Remove(filepath.Join(dir, spareKeyFile)) != nil {
		mu.Unlock()
		return "", func() {}
	}
	return filepath.Join(dir, "data"), func() {
		_ = os.RemoveAll(dir)
		mu.Unlock()
	}
}

// sweepSpare removes this instance's spare unless it is complete and of
// the current template.
func (e *Embedded) sweepSpare() error {
	dir := e.spareDir()
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	mu := e.spareLock()
	mu.Lock()
	defer mu.Unlock()
	if got := e.spareKey(); got != "" && e.TemplateDir != "" {
		if bins, err := e.Bins.Pick(0, true); err == nil {
			if tpl, key, err := e.template(bins); err == nil && spareStamp(tpl, key) == got {
				return nil
			}
		}
	}
	e.Log.Info("removing an incomplete or stale spare scratch cluster", "dir", dir)
	return os.RemoveAll(dir)
}

// handOver gives the data folder moved in from a spare to the cluster
// user (owner; nil: not root, only checked): every entry must be a folder
// or a regular file, as a copy of the template makes. The caller makes
// sure no one else can reach it meanwhile (the cluster folder is this
// process's and 0700).
func handOver(data string, owner *syscall.Credential) error {
	return filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("spare %s: not a regular file or folder (%v)", p, d.Type())
		}
		if owner == nil {
			return nil
		}
		return os.Lchown(p, int(owner.Uid), int(owner.Gid))
	})
}
