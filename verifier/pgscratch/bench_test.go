package pgscratch_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier/pgscratch"
)

// cpuNow is the CPU time (user + system) of this process and of the
// children it waited for (initdb, pg_ctl; the server, detached, is not).
func cpuNow() time.Duration {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	var d time.Duration
	for _, tv := range []syscall.Timeval{self.Utime, self.Stime, kids.Utime, kids.Stime} {
		d += time.Duration(tv.Nano())
	}
	return d
}

// BenchmarkCreateEarly is a drill's scratch cluster, made, started and
// its database created (CreateEarly); closing it is not counted. It
// reports wall and CPU milliseconds per cluster, initdb'd each time,
// copied from a template (made before the timing starts; the spare each
// Close makes is removed untimed), and renamed from a spare (made untimed
// after each Close, as a daemon does between drills).
func BenchmarkCreateEarly(b *testing.B) {
	bins, err := pgscratch.FindBins(os.Getenv("BACKUPVERIFY_PG_BIN_DIR"))
	if err != nil {
		b.Skip(err)
	}
	for _, mode := range []string{"initdb", "template", "spare"} {
		b.Run(mode, func(b *testing.B) {
			e := &pgscratch.Embedded{Bins: bins, Dir: testenv.ScratchDir(b), Instance: "77777777777777777777777777777777", Log: quiet(), Now: time.Now}
			between := func() {}
			if mode != "initdb" {
				e.TemplateDir = filepath.Join(b.TempDir(), "template")
				b.Cleanup(e.Wait)
				db, err := e.CreateEarly(context.Background(), "bench")
				if err != nil {
					b.Fatal(err)
				}
				db.Close(context.Background())
				between = func() {
					e.Wait()
					if mode == "template" {
						os.RemoveAll(pgscratch.SpareDir(e))
					} else if _, err := os.Stat(filepath.Join(pgscratch.SpareDir(e), "key")); err != nil {
						b.Fatalf("no spare: %v", err)
					}
				}
				between()
			}
			benchCreateEarly(b, e, between)
		})
	}
}

func benchCreateEarly(b *testing.B, e *pgscratch.Embedded, between func()) {
	ctx := context.Background()
	var wall, cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0, c0 := time.Now(), cpuNow()
		db, err := e.CreateEarly(ctx, "bench")
		wall += time.Since(t0)
		cpu += cpuNow() - c0
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := db.Close(ctx); err != nil {
			b.Fatal(err)
		}
		between()
		b.StartTimer()
	}
	b.ReportMetric(float64(wall.Milliseconds())/float64(b.N), "wall-ms/op")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}
