package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/pgscratch"
)

// sweep removes what drills that did not finish left behind: downloaded
// files, embedded clusters, and databases and roles on scratch servers.
// Only one daemon may use a state_dir or a scratch server's prefix.
func sweep(ctx context.Context, c *config.Config, log *slog.Logger, now func() time.Time) {
	if err := os.RemoveAll(verifier.TempDir(c.StateDir)); err != nil {
		log.Warn("remove leftover drill files", "err", err)
	}
	bins, err := pgscratch.FindBins(c.PGBinDir)
	if err != nil {
		return
	}
	emb := embeddedScratch(c, bins, log, now)
	if err := emb.Sweep(ctx); err != nil {
		log.Warn("sweep embedded scratch clusters", "err", err)
	}
	byDSN := map[string][]string{}
	for _, t := range c.Targets {
		if t.Drill.Scratch != config.ScratchEmbedded {
			byDSN[t.Drill.Scratch] = append(byDSN[t.Drill.Scratch], t.Name)
		}
	}
	for dsn, names := range byDSN {
		srv := serverScratch(dsn, bins, log, now)
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := srv.Sweep(sctx, names); err != nil {
			log.Warn("sweep scratch server", "scratch", srv.Location(), "err", err)
		}
		cancel()
	}
}

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
