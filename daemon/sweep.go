package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/pgscratch"
)

// sweep removes what drills of this daemon that did not finish left
// behind: downloaded files, embedded clusters, and databases and roles on
// scratch servers. Scratch objects are marked with the instance id kept in
// state_dir, and only those carrying it are removed: other daemons sharing
// a scratch_dir or a scratch server keep theirs. If a target drills in an
// embedded cluster, it then starts making the spare cluster of the first
// drill in the background (pgscratch.Embedded.PrepareSpare; see
// pgscratch.WaitSpares).
func sweep(ctx context.Context, c *config.Config, log *slog.Logger, now func() time.Time) {
	if err := os.RemoveAll(verifier.TempDir(c.StateDir)); err != nil {
		log.Warn("remove leftover drill files", "err", err)
	}
	bins, err := pgscratch.FindBins(c.PGBinDir)
	if err != nil {
		return
	}
	instance, err := InstanceID(c.StateDir)
	if err != nil {
		log.Warn("no instance id: scratch leftovers are not swept", "err", err)
		return
	}
	emb := embeddedScratch(c, bins, instance, log, now)
	if err := emb.Sweep(ctx); err != nil {
		log.Warn("sweep embedded scratch clusters", "err", err)
	}
	dsns := map[string]bool{}
	embedded := false
	for _, t := range c.Targets {
		if t.Drill.Scratch != config.ScratchEmbedded {
			dsns[t.Drill.Scratch] = true
		} else {
			embedded = true
		}
	}
	if embedded {
		emb.PrepareSpareLater()
	}
	for dsn := range dsns {
		srv := serverScratch(dsn, bins, instance, log, now)
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := srv.Sweep(sctx); err != nil {
			log.Warn("sweep scratch server", "scratch", srv.Location(), "err", err)
		}
		cancel()
	}
}

// instanceFile, in state_dir, holds the daemon's instance id.
const instanceFile = "instance-id"

// InstanceID is the id of the daemon that owns stateDir: random, made on
// first use and kept in state_dir/instance-id. Scratch objects carry it.
func InstanceID(stateDir string) (string, error) {
	path := filepath.Join(stateDir, instanceFile)
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); instanceRE.MatchString(id) {
			return id, nil
		}
		return "", fmt.Errorf("%s does not hold an instance id (32 hex digits); delete it to make a new one", path)
	}
	if err := os.MkdirAll(stateDir, 0o750); err != nil {
		return "", fmt.Errorf("state_dir: %w", err)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	// Written aside and linked into place: of two first uses, one wins.
	tmp, err := os.CreateTemp(stateDir, ".instance-id-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(id + "\n"); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	return InstanceID(stateDir)
}

var instanceRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// checkWritable makes state_dir if need be and proves it can be written.
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("state_dir %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}
