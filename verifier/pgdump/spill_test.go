package pgdump_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier/pgdump"
)

// wideSQL makes six tables of about 2 MiB each that zlib cannot shrink much
// (md5 text): more than the few segments per worker held in memory, so that
// the parallel reader parks data in its spill file.
const wideSQL = `
DO $$ BEGIN
  FOR i IN 1..6 LOOP
    EXECUTE format('CREATE TABLE wide_%s (id int PRIMARY KEY, v text)', i);
    EXECUTE format('INSERT INTO wide_%s SELECT g, md5(g::text || %L) || md5(random()::text) || md5(random()::text) FROM generate_series(1, 30000) g', i, i);
  END LOOP;
END $$;
`

// TestSpill reads a dump whose tables outgrow the memory segments with a
// spill file: the same Info as the one-goroutine reader, data did pass
// through the file, nothing is left on disk, and damage inside data that
// waited on disk is found, at the same place the one-goroutine reader finds
// it. A spill folder that cannot be used falls back to memory.
func TestSpill(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Exec(t, "postgres", "CREATE DATABASE wide")
	pg.Exec(t, "wide", wideSQL)
	path := filepath.Join(t.TempDir(), "wide.dump")
	pg.Dump(t, "wide", "custom", path)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	read := func(data []byte, opts pgdump.Options) (pgdump.Info, error) {
		return pgdump.Read(context.Background(), bytes.NewReader(data), opts)
	}
	want, err := read(orig, pgdump.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want.DataBlocks != 6 || len(orig) < 8<<20 {
		t.Fatalf("the dump is not what the test needs: %d bytes, %d data blocks", len(orig), want.DataBlocks)
	}

	for _, c := range []struct {
		name     string
		workers  int
		spillMax int64
	}{{"two workers", 2, 0}, {"four workers", 4, 0}, {"one segment of spill", 2, 256 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			got, err := read(orig, pgdump.Options{Workers: c.workers, SpillDir: dir, SpillMax: c.spillMax})
			if err != nil {
				t.Fatal(err)
			}
			if got.SpilledBytes == 0 {
				t.Error("nothing passed through the spill file")
			}
			got.SpilledBytes = 0
			if got != want {
				t.Errorf("with a spill file:\n%+v\nwithout:\n%+v", got, want)
			}
			if n := pgdump.SharedSpillInUse(); n != 0 {
				t.Errorf("%d slots of the shared spill budget still taken after the read", n)
			}
			if left, _ := os.ReadDir(dir); len(left) > 0 {
				t.Errorf("left in the spill folder: %v", left)
			}
		})
	}

	t.Run("spill_max 0", func(t *testing.T) {
		pgdump.SetSpillMax(0)
		defer pgdump.SetSpillMax(pgdump.DefaultSpillMax)
		got, err := read(orig, pgdump.Options{Workers: 2, SpillDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if got.SpilledBytes != 0 || got.BytesInflated != want.BytesInflated {
			t.Errorf("spilled %d bytes, inflated %d (want 0 and %d)", got.SpilledBytes, got.BytesInflated, want.BytesInflated)
		}
	})

	t.Run("unusable spill folder", func(t *testing.T) {
		got, err := read(orig, pgdump.Options{Workers: 2, SpillDir: filepath.Join(t.TempDir(), "missing")})
		if err != nil {
			t.Fatal(err)
		}
		if got.SpilledBytes != 0 || got.BytesInflated != want.BytesInflated {
			t.Errorf("spilled %d bytes, inflated %d (want 0 and %d)", got.SpilledBytes, got.BytesInflated, want.BytesInflated)
		}
	})

	// Damage in the last table's data, which waits on disk while the
	// first tables are inflated.
	cut := len(orig) - 300<<10
	flipped := bytes.Clone(orig)
	flipped[cut] ^= 0x55
	for _, m := range []struct {
		name string
		data []byte
		kind error
	}{{"flip", flipped, pgdump.ErrCorrupt}, {"cut", orig[:cut], pgdump.ErrTruncated}} {
		t.Run(m.name, func(t *testing.T) {
			_, want := read(m.data, pgdump.Options{Workers: 1})
			dir := t.TempDir()
			got, err := read(m.data, pgdump.Options{Workers: 2, SpillDir: dir})
			if !errors.Is(want, m.kind) || !errors.Is(err, m.kind) {
				t.Fatalf("one goroutine: %v; spilling: %v; want both %v", want, err, m.kind)
			}
			if got.SpilledBytes == 0 {
				t.Error("nothing passed through the spill file")
			}
			t.Logf("spilling: %v", err)
			if !strings.Contains(err.Error(), entryOf(want)) {
				t.Errorf("spilling: %v; one goroutine: %v", err, want)
			}
			if left, _ := os.ReadDir(dir); len(left) > 0 {
				t.Errorf("left in the spill folder: %v", left)
			}
			if n := pgdump.SharedSpillInUse(); n != 0 {
				t.Errorf("%d slots of the shared spill budget still taken after the read", n)
			}
		})
	}

	// A read stopped by a worker's failure while others are still being
	// fed: many damaged tables, every slot must come back.
	t.Run("stopped early", func(t *testing.T) {
		for i := 0; i < 20; i++ {
			b := bytes.Clone(orig)
			for k := 2 << 20; k < len(b)-1<<20; k += 1 << 20 {
				b[k] ^= 0x55
			}
			if _, err := read(b, pgdump.Options{Workers: 2, SpillDir: t.TempDir()}); !errors.Is(err, pgdump.ErrCorrupt) {
				t.Fatalf("got %v, want corrupt", err)
			}
			if n := pgdump.SharedSpillInUse(); n != 0 {
				t.Fatalf("read %d: %d slots of the shared spill budget still taken", i, n)
			}
		}
	})
}

// entryOf is the "entry N" an error names, or the whole message.
func entryOf(err error) string {
	s := err.Error()
	if i := strings.Index(s, "entry "); i >= 0 {
		s = s[i:]
		if j := strings.IndexAny(s, ":,"); j >= 0 {
			s = s[:j]
		}
	}
	return s
}
