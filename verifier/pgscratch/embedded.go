package pgscratch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// Embedded is scratch in a throwaway cluster per drill, made below Dir
// (a copy of a template kept in TemplateDir, or initdb'd), listening on a
// Unix socket only, and removed after the drill.
type Embedded struct {
	Bins Bins
	// Dir holds the clusters (drills.scratch_dir; see DefaultScratchDir).
	// As root it is root's, mode 0711, and every folder above it must let
	// others search it: nothing above it is ever opened up.
	Dir string
	// User is the OS user clusters run as when root (drills.scratch_user).
	User string
	// Instance is the daemon's instance id: each cluster folder records
	// it, and Sweep removes only folders that do.
	Instance string
	// Settings are server settings of every cluster (ScratchSettings).
	Settings map[string]string
	// TemplateDir keeps the template clusters are copied from instead of
	// running initdb each time ("": no template, always initdb). Only this
	// process's user may write it: the daemon uses state_dir/template.
	// The first drill makes the template; a package upgrade remakes it.
	TemplateDir string
	Log         *slog.Logger
	Now         func() time.Time

	warnOnce     sync.Once
	templateWarn sync.Once
	spareWarn    sync.Once
}

// warnTemplate says once that clusters are initdb'd for want of a template.
func (e *Embedded) warnTemplate(err error) {
	e.templateWarn.Do(func() {
		e.Log.Warn("scratch clusters are made with initdb, not copied from a template (slower, nothing else changes)",
			"template_dir", e.TemplateDir, "err", err)
	})
}

// DefaultScratchDir is where embedded clusters live unless drills.scratch_dir
// says otherwise: below state_dir, except as root. Then the clusters run as
// another user who must reach them, and state_dir (0750, with downloaded
// backups and reports) is not opened to it: they live in a folder made for
// them, root's and 0711, on disk (/var/tmp, not the often RAM-backed /run
// or /tmp), which several daemons may share (each sweeps only its own).
func DefaultScratchDir(stateDir string) string {
	if os.Geteuid() == 0 {
		return "/var/tmp/backupverify"
	}
	return filepath.Join(stateDir, "scratch")
}

// Location implements verifier.Scratch.
func (e *Embedded) Location() string { return "embedded" }

// restoreRole is the role restores run as: it owns the scratch database
// and nothing else, and is not a superuser.
const restoreRole = "backupverify_restore"

// prepare makes Dir, and as root checks that the cluster user can reach it
// by design: Dir root's and 0711, and every folder above it searchable by
// others and not writable by them (unless sticky, as /var/tmp).
func (e *Embedded) prepare() error {
	if os.Geteuid() != 0 {
		return os.MkdirAll(e.Dir, 0o700)
	}
	if err := os.MkdirAll(e.Dir, 0o711); err != nil {
		return err
	}
	fi, err := os.Lstat(e.Dir)
	if err != nil {
		return err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || st == nil || st.Uid != 0 {
		return fmt.Errorf("scratch_dir %s must be a folder owned by root (it is not: someone else made it?)", e.Dir)
	}
	if fi.Mode().Perm() != 0o711 {
		if err := os.Chmod(e.Dir, 0o711); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(e.Dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		m := fi.Mode()
		if m.Perm()&0o001 == 0 {
			return fmt.Errorf("drills.scratch_dir %s: the cluster user cannot reach it, as %s is not searchable by others (mode %04o); choose a scratch_dir whose parents are (the default, %s, is), rather than opening %s", e.Dir, p, m.Perm(), DefaultScratchDir(""), p)
		}
		if m.Perm()&0o002 != 0 && m&os.ModeSticky == 0 {
			return fmt.Errorf("drills.scratch_dir %s: %s is writable by everyone without the sticky bit", e.Dir, p)
		}
		if p == "/" {
			return nil
		}
	}
}

// Create implements verifier.Scratch.
func (e *Embedded) Create(ctx context.Context, target string, info verifier.ArchiveInfo) (verifier.ScratchDB, error) {
	if err := e.CheckArchive(info); err != nil {
		return nil, err
	}
	return e.CreateEarly(ctx, target)
}

// CheckArchive implements verifier.EarlyScratch: there must be server
// programs at least as new as the archive's pg_dump. CreateEarly runs the
// newest installed, which is what Pick chooses for any archive it accepts.
func (e *Embedded) CheckArchive(info verifier.ArchiveInfo) error {
	bins, err := e.Bins.Pick(dumpMajor(info), true)
	if err != nil {
		return fmt.Errorf("the archive was made by pg_dump %s: %w", info.DumpVersion, err)
	}
	return checkMajor(info, bins.Major, "the embedded scratch cluster ("+bins.Dir+")")
}

// CreateEarly implements verifier.EarlyScratch: the cluster (copied from
// the template, or initdb'd, and then kept as the template), start and the
// database, with the newest server programs installed, before the archive's
// header is known, so that a drill does it while the backup downloads.
func (e *Embedded) CreateEarly(ctx context.Context, target string) (verifier.ScratchDB, error) {
	return e.createEarly(ctx, target, true)
}

// createEarly is CreateEarly; retry says whether a cluster copied from the
// template or the spare that does not start is made again by initdb.
func (e *Embedded) createEarly(ctx context.Context, target string, retry bool) (verifier.ScratchDB, error) {
	bins, err := e.Bins.Pick(0, true)
	if err != nil {
		return nil, err
	}
	if err := e.prepare(); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if _, fallback, err := ClusterUser(e.User); err == nil && fallback {
			e.warnOnce.Do(func() {
				e.Log.Warn("scratch clusters run as nobody, an account other daemons may share; create the account "+DefaultClusterUser+" or set drills.scratch_user",
					"create", "useradd --system --no-create-home --shell /usr/sbin/nologin "+DefaultClusterUser)
			})
		}
	}
	var tpl, key string
	if e.TemplateDir != "" {
		if tpl, key, err = e.template(bins); err != nil {
			e.warnTemplate(err)
		}
	}
	var spare string
	done := func() {}
	if tpl != "" {
		spare, done = e.takeSpare(spareStamp(tpl, key))
	}
	name := scratchName(target, e.Now())
	c, err := NewClusterWith(ctx, bins, filepath.Join(e.Dir, name), ClusterOptions{
		User: e.User, Settings: e.Settings, Owner: Mark(e.Instance), SocketTag: e.socketTag(), Template: tpl, Spare: spare})
	done()
	if err != nil {
		return nil, err
	}
	if c.TemplateErr != nil {
		e.warnTemplate(c.TemplateErr)
	}
	if c.SpareErr != nil {
		e.spareWarn.Do(func() {
			e.Log.Warn("the spare scratch cluster could not be used; the template was copied instead", "err", c.SpareErr)
		})
	}
	if key != "" && (tpl == "" || c.TemplateErr != nil) {
		// Just initdb'd, not started: what later drills copy (in place of
		// a template that could not be copied).
		if err := e.saveTemplate(bins, key, c.dataDir()); err != nil && !errors.Is(err, errTemplateBusy) {
			e.warnTemplate(err)
		}
	}
	db := &scratchDB{name: name, bins: bins, cluster: c, role: restoreRole,
		restoreConn: c.DSN(name, restoreRole), adminConn: c.DSN("postgres", "")}
	if e.TemplateDir != "" {
		db.closed = e.PrepareSpareLater
	}
	if err := c.Start(ctx); err != nil {
		_ = c.Remove(context.WithoutCancel(ctx))
		copied := c.FromSpare || tpl != "" && c.TemplateErr == nil
		if retry && copied && ctx.Err() == nil {
			// A damaged template (a crash while it was written, a bad
			// disk) must not fail every drill: it goes, with the spare
			// copied from it, and this drill runs initdb, which makes the
			// template again.
			e.Log.Warn("a scratch cluster copied from the template did not start; removing the template and the spare, and running initdb",
				"err", err, "template", filepath.Dir(tpl))
			e.dropCopies()
			return e.createEarly(ctx, target, false)
		}
		return nil, err
	}
	if err := db.create(ctx, ""); err != nil {
		_ = db.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return db, nil
}

// socketTag names this instance's short socket folders (bvsock-<tag>-*).
func (e *Embedded) socketTag() string {
	if len(e.Instance) >= 12 {
		return e.Instance[:12]
	}
	return SocketTag(e.Dir)
}

// Sweep removes clusters left by drills of this instance that did not
// finish (a killed daemon): only folders whose owner record, written by
// this process's user, carries the instance's mark. Folders of other
// daemons sharing Dir, and anything the cluster user could have written,
// are left alone; a socket record is followed only to a bvsock-* folder in
// the temporary folder. In TemplateDir it removes what a template build
// that did not finish left, and keeps the template. This instance's spare
// goes unless it is complete and of the current template; other
// instances' spares stay.
func (e *Embedded) Sweep(ctx context.Context) error {
	if e.Instance == "" {
		return errors.New("sweep: no instance id")
	}
	var errs []error
	if e.TemplateDir != "" {
		errs = append(errs, e.sweepTemplates())
	}
	errs = append(errs, e.sweepSpare(), e.sweepOrphanSpares())
	entries, err := os.ReadDir(e.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, ent := range entries {
		dir := filepath.Join(e.Dir, ent.Name())
		if !ent.IsDir() || !strings.HasPrefix(ent.Name(), DBPrefix) {
			continue
		}
		if owner, err := ownRecord(filepath.Join(dir, ownerFile)); err != nil || owner != Mark(e.Instance) {
			continue
		}
		c, err := openCluster(e.Bins, dir, e.User)
		if err != nil {
			e.Log.Warn("a scratch cluster's socket record is not ours; leaving that cluster alone", "dir", dir, "err", err)
			continue
		}
		e.Log.Warn("removing a scratch cluster left by an unfinished drill", "dir", c.Dir)
		if err := c.Remove(ctx); err != nil {
			// The server may be gone already; the folders must go regardless.
			if c.socket != filepath.Join(dir, "socket") {
				errs = append(errs, os.RemoveAll(c.socket))
			}
			errs = append(errs, os.RemoveAll(c.Dir))
		}
	}
	return errors.Join(errs...)
}
