package scheduler

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/robfig/cron/v3"
)

// MinWait is the least time between the due times of two runs of a Loop,
// whatever the plan says: a cron spec that never fires again, or a clock
// that jumps, must not make a loop spin.
const MinWait = time.Second

// Poll plans a repeating job such as a watch loop's scans: every Every, at a
// phase within Every fixed by the job's key (so that a thousand jobs with the
// same interval do not all run in the same second, and each keeps its slot
// across restarts), and also shortly after each time a cron schedule names
// (Settle later, plus the key's share of a minute at most). Phases are whole
// seconds: with an Every of whole seconds, jobs sharing a second run at the
// same instant.
type Poll struct {
	every  time.Duration
	phase  time.Duration // in [0, every)
	cron   cron.Schedule // nil: none
	settle time.Duration
}

// NewPoll returns the plan of the job named key. at may be nil.
func NewPoll(key string, every time.Duration, at cron.Schedule, settle time.Duration) Poll {
	every = max(every, MinWait)
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	sum := h.Sum64()
	// Phases fall on whole seconds, so the jobs of one second wake the
	// process once: a thousand polls a minute woken one by one kept the Go
	// runtime from ever settling, and that, not the polls' work, was most of
	// an idle daemon's CPU (1.6% of a core at 1,000 targets, 0.5% with one
	// wake-up a second; see README, Performance).
	p := Poll{every: every, phase: time.Duration(sum % uint64(every)).Truncate(time.Second), cron: at, settle: settle}
	// After a cron time, spread the jobs over at most a minute too.
	p.settle += time.Duration(sum % uint64(min(every, time.Minute))).Truncate(time.Second)
	return p
}

// Next is the next time the job runs after now: its next slot, or the cron
// schedule's next time plus settle if that comes first. Loop keeps two runs
// at least MinWait apart.
func (p Poll) Next(now time.Time) time.Time {
	e := int64(p.every)
	off := (now.UnixNano() - int64(p.phase)) % e
	if off < 0 {
		off += e
	}
	next := now.Add(time.Duration(e - off))
	if p.cron != nil {
		if c := p.cron.Next(now); !c.IsZero() && c.Add(p.settle).Before(next) {
			next = c.Add(p.settle)
		}
	}
	return next
}

// Loop runs fn at once, then at each time next names after fn returns, until
// ctx ends. Two runs are due at least MinWait apart whatever next says, so a
// loop never spins; a run pushed back that way is due on a whole second,
// with the other jobs of that second. The floor counts from when a run was
// due, not from its end, so a job polling every second whose scan takes a
// few milliseconds still runs every second (a timer that fired late may
// bring the next run closer than MinWait, never earlier than its slot).
func Loop(ctx context.Context, now func() time.Time, next func(time.Time) time.Time, fn func(context.Context)) {
	// planned is when this run was due: timers fire a little late, and the
	// floor counts from the plan so that lateness does not skip a slot.
	planned := now()
	for {
		fn(ctx)
		if ctx.Err() != nil {
			return
		}
		t := now()
		at := next(t)
		if floor := planned.Add(MinWait); at.Before(floor) {
			at = floor
			if r := floor.Truncate(time.Second); r.Before(floor) {
				at = r.Add(time.Second)
			}
		}
		planned = at
		timer := time.NewTimer(at.Sub(t))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}
