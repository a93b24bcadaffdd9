package scheduler

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestMaxConcurrentAndSkipIfRunning(t *testing.T) {
	s := New(1, quiet())
	defer s.Stop(5 * time.Second)
	var cur, peak, runs atomic.Int32
	release := make(chan struct{})
	job := func(ctx context.Context, _ string) {
		runs.Add(1)
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
	}
	for _, n := range []string{"a", "b"} {
		if err := s.Set(n, "@yearly", job); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RunNow("a", "manual"); err != nil {
		t.Fatal(err)
	}
	if err := s.RunNow("b", "manual"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return runs.Load() == 1 && s.Running("a") && s.Running("b") })
	// b waits its turn (it is not skipped), and a second run of a is refused.
	if err := s.RunNow("a", "manual"); err != ErrRunning {
		t.Errorf("second run of a: %v, want ErrRunning", err)
	}
	close(release)
	waitFor(t, func() bool { return runs.Load() == 2 && !s.Running("a") && !s.Running("b") })
	if peak.Load() != 1 {
		t.Errorf("peak concurrency %d, want 1", peak.Load())
	}
}

func TestPanicRecoveredAndStopCancels(t *testing.T) {
	s := New(2, quiet())
	s.Set("boom", "@yearly", func(context.Context, string) { panic("boom") })
	s.RunNow("boom", "manual")
	waitFor(t, func() bool { return !s.Running("boom") })

	var cancelled sync.WaitGroup
	cancelled.Add(1)
	s.Set("long", "@yearly", func(ctx context.Context, _ string) {
		<-ctx.Done()
		cancelled.Done()
	})
	s.RunNow("long", "manual")
	waitFor(t, func() bool { return s.Running("long") })
	if !s.Stop(5 * time.Second) {
		t.Fatal("Stop did not wait for the cancelled run")
	}
	cancelled.Wait()
}

func TestNextIntervalAndReplan(t *testing.T) {
	s := New(1, quiet())
	defer s.Stop(time.Second)
	s.Set("a", "0 * * * *", func(context.Context, string) {})
	if got := s.Interval("a"); got != time.Hour {
		t.Errorf("interval %v, want 1h", got)
	}
	if n := s.Next("a"); n.Minute() != 0 || time.Until(n) > time.Hour {
		t.Errorf("next %v", n)
	}
	s.Set("a", "*/5 * * * *", func(context.Context, string) {})
	if got := s.Interval("a"); got != 5*time.Minute {
		t.Errorf("after re-plan: interval %v, want 5m", got)
	}
	s.Remove("a")
	if !s.Next("a").IsZero() || s.RunNow("a", "x") != ErrUnknown {
		t.Error("removed job still scheduled")
	}
	if err := s.Set("b", "61 * * * *", nil); err == nil {
		t.Error("bad spec accepted")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReplanWhileRunning: a job re-planned (a config reload) while it runs
// finishes, and no second run starts before it does.
func TestReplanWhileRunning(t *testing.T) {
	s := New(2, quiet())
	defer s.Stop(5 * time.Second)
	release := make(chan struct{})
	var runs atomic.Int32
	job := func(context.Context, string) {
		runs.Add(1)
		<-release
	}
	s.Set("a", "@yearly", job)
	s.RunNow("a", "manual")
	waitFor(t, func() bool { return runs.Load() == 1 })
	s.Set("a", "@monthly", job) // a reload while the drill runs
	if err := s.RunNow("a", "manual"); err != ErrRunning {
		t.Errorf("a run after re-planning, while the old one runs: %v, want ErrRunning", err)
	}
	close(release)
	waitFor(t, func() bool { return !s.Running("a") })
	if err := s.RunNow("a", "manual"); err != nil {
		t.Errorf("after the old run finished: %v", err)
	}
	waitFor(t, func() bool { return runs.Load() == 2 })
}

// TestRunNowStartsWhatItAccepts: two RunNow calls back to back, before the
// first run's goroutine has started: exactly one is accepted, and the one
// accepted runs (nil means started, never "skipped later").
func TestRunNowStartsWhatItAccepts(t *testing.T) {
	s := New(2, quiet())
	defer s.Stop(5 * time.Second)
	release := make(chan struct{})
	var runs atomic.Int32
	s.Set("a", "@yearly", func(context.Context, string) {
		runs.Add(1)
		<-release
	})
	for i := range 50 {
		var accepted int
		for range 2 {
			switch err := s.RunNow("a", "api"); err {
			case nil:
				accepted++
			case ErrRunning:
			default:
				t.Fatal(err)
			}
		}
		if accepted != 1 {
			t.Fatalf("round %d: %d of 2 back-to-back RunNow accepted, want 1", i, accepted)
		}
		waitFor(t, func() bool { return runs.Load() == int32(i+1) })
		release <- struct{}{}
		waitFor(t, func() bool { return !s.Running("a") })
	}
}

// TestJobsAgreesWithEachJob: Jobs gives, from one look at the cron, what
// Next, Interval and Running give job by job; a removed job is gone.
func TestJobsAgreesWithEachJob(t *testing.T) {
	s := New(2, quiet())
	defer s.Stop(5 * time.Second)
	release := make(chan struct{})
	defer close(release)
	specs := map[string]string{"daily": "0 3 * * *", "hourly": "@hourly", "weekly": "30 2 * * 0", "gone": "@daily"}
	for name, spec := range specs {
		if err := s.Set(name, spec, func(ctx context.Context, _ string) { <-release }); err != nil {
			t.Fatal(err)
		}
	}
	s.Remove("gone")
	if err := s.RunNow("hourly", "manual"); err != nil {
		t.Fatal(err)
	}
	jobs := s.Jobs()
	if len(jobs) != 3 {
		t.Fatalf("Jobs has %d jobs, want 3: %v", len(jobs), jobs)
	}
	for name := range specs {
		if name == "gone" {
			continue
		}
		j, want := jobs[name], State{Next: s.Next(name), Interval: s.Interval(name), Running: s.Running(name)}
		if !j.Next.Equal(want.Next) || j.Interval != want.Interval || j.Running != want.Running || j.Next.IsZero() {
			t.Errorf("%s: Jobs says %+v, one by one %+v", name, j, want)
		}
	}
	if !jobs["hourly"].Running || jobs["daily"].Running {
		t.Errorf("running: %+v", jobs)
	}
	if jobs["weekly"].Interval != 7*24*time.Hour || jobs["hourly"].Interval != time.Hour {
		t.Errorf("intervals: %+v", jobs)
	}
}

// TestJobsDuringSet: a job replaced by Set (a config reload changing a
// target) while Jobs looks at the cron keeps a next run; Jobs reads the job
// map only under the scheduler's lock.
func TestJobsDuringSet(t *testing.T) {
	s := New(2, quiet())
	defer s.Stop(5 * time.Second)
	job := func(context.Context, string) {}
	if err := s.Set("a", "@hourly", job); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			if err := s.Set("a", "@hourly", job); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	zero := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		if j, ok := s.Jobs()["a"]; !ok || j.Next.IsZero() {
			zero++
		}
	}
	if zero > 0 {
		t.Errorf("Jobs gave job a no next run %d times while Set replaced it", zero)
	}
}
