package pgscratch

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// Embedded is scratch in a throwaway cluster per drill, initdb'd below Dir,
// listening on a Unix socket only, and removed after the drill.
type Embedded struct {
	Bins Bins
	Dir  string // state_dir/scratch
	Log  *slog.Logger
	Now  func() time.Time
}

// Location implements verifier.Scratch.
func (e *Embedded) Location() string { return "embedded" }

// restoreRole is the role restores run as: it owns the scratch database
// and nothing else, and is not a superuser.
const restoreRole = "backupverify_restore"

// Create implements verifier.Scratch.
func (e *Embedded) Create(ctx context.Context, target string, info verifier.ArchiveInfo) (verifier.ScratchDB, error) {
	if err := checkMajor(info, e.Bins.Major, "the embedded scratch cluster ("+e.Bins.Dir+")"); err != nil {
		return nil, err
	}
	name := scratchName(target, e.Now())
	c, err := NewCluster(ctx, e.Bins, filepath.Join(e.Dir, name))
	if err != nil {
		_ = os.RemoveAll(filepath.Join(e.Dir, name))
		return nil, err
	}
	if len(c.Opened) > 0 {
		e.Log.Warn("gave other users search permission (o+x) on folders above state_dir, so that PostgreSQL, running unprivileged, can reach its scratch cluster",
			"folders", c.Opened)
	}
	db := &scratchDB{name: name, bins: e.Bins, cluster: c, role: restoreRole,
		restoreConn: c.DSN(name, restoreRole), adminConn: c.DSN("postgres", "")}
	if err := c.Start(ctx); err != nil {
		_ = c.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	if err := db.create(ctx, ""); err != nil {
		_ = db.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return db, nil
}

// Sweep removes clusters left by drills that did not finish (a killed daemon).
func (e *Embedded) Sweep(ctx context.Context) error {
	entries, err := os.ReadDir(e.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, ent := range entries {
		if !strings.HasPrefix(ent.Name(), DBPrefix) {
			continue
		}
		c := openCluster(e.Bins, filepath.Join(e.Dir, ent.Name()))
		e.Log.Warn("removing a scratch cluster left by an unfinished drill", "dir", c.Dir)
		if err := c.Remove(ctx); err != nil {
			// The server may be gone already; the folders must go regardless.
			errs = append(errs, os.RemoveAll(c.Dir), os.RemoveAll(c.socket))
		}
	}
	return errors.Join(errs...)
}
