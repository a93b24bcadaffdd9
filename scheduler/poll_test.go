package scheduler

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// A thousand jobs polling every minute are spread over the minute: no
// second holds more than a handful, and each keeps its slot. Those of one
// second run at the same instant.
func TestPollSpreadsJobsOverTheInterval(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	perSecond := map[int64]int{}
	for i := range 1000 {
		p := NewPoll(fmt.Sprintf("t%04d", i), time.Minute, nil, 0)
		n := p.Next(now)
		if d := n.Sub(now); d < MinWait || d > time.Minute {
			t.Fatalf("job %d: next in %s, want within (1s, 1m]", i, d)
		}
		if a, b := p.Next(n), p.Next(p.Next(n)); b.Sub(a) != time.Minute {
			t.Fatalf("job %d: two slots %s apart, want 1m", i, b.Sub(a))
		}
		perSecond[n.Unix()]++
		// Jobs wake on whole seconds, so those sharing a second share one
		// wake-up of the process, whatever the time now.
		if n2 := p.Next(now.Add(123456789)); n2.Nanosecond() != 0 || !n2.After(now.Add(123456789)) {
			t.Fatalf("job %d: next at %s, not on a whole second", i, n2.Format(time.RFC3339Nano))
		}
	}
	most := 0
	for _, c := range perSecond {
		most = max(most, c)
	}
	// 1,000 over 60 seconds is about 17 a second.
	if len(perSecond) < 55 || most > 40 {
		t.Errorf("1000 jobs land in %d distinct seconds, at most %d in one; want them spread", len(perSecond), most)
	}
}

func TestPollCronAndFloor(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	every15, _ := cron.ParseStandard("*/15 * * * *")
	p := NewPoll("a", time.Hour, every15, 5*time.Second)
	n := p.Next(now.Add(14 * time.Minute))
	if n.Before(now.Add(15*time.Minute+5*time.Second)) || n.After(now.Add(16*time.Minute+5*time.Second)) {
		t.Errorf("next after the 12:15 backup is %s, want 12:15:05 plus at most a minute", n)
	}
	// A cron spec that never fires again (30 February) must not make the
	// loop spin: robfig/cron returns the zero time for it.
	never, err := cron.ParseStandard("0 0 30 2 *")
	if err != nil {
		t.Fatal(err)
	}
	p = NewPoll("a", time.Minute, never, 5*time.Second)
	if d := p.Next(now).Sub(now); d <= 0 || d > time.Minute {
		t.Errorf("with a cron spec that never fires, next is in %s, want its next slot", d)
	}
	// A poll shorter than MinWait polls every MinWait.
	p = NewPoll("a", time.Millisecond, nil, 0)
	if d := p.Next(now).Sub(now); d != MinWait {
		t.Errorf("poll of 1ms: next in %s, want %s", d, MinWait)
	}
}

// A job polling every second whose scan takes a few milliseconds runs every
// second, on whole seconds: the floor counts from a run's start, not its end.
func TestLoopPollEverySecond(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4500*time.Millisecond)
	defer cancel()
	p := NewPoll("a", time.Second, nil, 0)
	var starts []time.Time
	Loop(ctx, time.Now, p.Next, func(context.Context) {
		starts = append(starts, time.Now())
		time.Sleep(20 * time.Millisecond)
	})
	// At once, then from the second whole second on, every second (the
	// run after the first waits for MinWait, rounded up to a whole second).
	if len(starts) < 4 {
		t.Fatalf("%d runs in 4.5 s with poll 1s, want at least 4: %v", len(starts), starts)
	}
	for i, s := range starts[1:] {
		if ms := s.Nanosecond() / 1e6; ms > 300 {
			t.Errorf("run %d started %d ms past a whole second", i+1, ms)
		}
		if i > 0 {
			if gap := s.Sub(starts[i]); gap < 700*time.Millisecond || gap > 1300*time.Millisecond {
				t.Errorf("runs %d and %d started %s apart, want 1s", i, i+1, gap)
			}
		}
	}
}

// Loop never runs more than once per MinWait, even when the plan says now.
func TestLoopFloor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	var runs atomic.Int32
	Loop(ctx, time.Now, func(now time.Time) time.Time { return now.Add(-time.Hour) }, func(context.Context) { runs.Add(1) })
	if n := runs.Load(); n < 2 || n > 3 {
		t.Errorf("%d runs in 2.5 s with a plan that is always overdue; want 3 (at 0, 1 and 2 s)", n)
	}
}
