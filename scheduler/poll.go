package scheduler

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/robfig/cron/v3"
)

// MinWait is the least time between two runs of a Loop, whatever the plan
// says: a cron spec that never fires again, or a clock that jumps, must not
// make a loop spin.
const MinWait = time.Second

// Poll plans a repeating job such as a watch loop's scans: every Every, at a
// phase within Every fixed by the job's key (so that a thousand jobs with the
// same interval do not all run in the same second, and each keeps its slot
// across restarts), and also shortly after each time a cron schedule names
// (Settle later, plus the key's share of a minute at most).
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
	p := Poll{every: every, phase: time.Duration(sum % uint64(every)), cron: at, settle: settle}
	// After a cron time, spread the jobs over at most a minute too.
	p.settle += time.Duration(sum % uint64(min(every, time.Minute)))
	return p
}

// Next is the next time the job runs after now: its next slot, or the cron
// schedule's next time plus settle if that comes first; never sooner than
// MinWait after now.
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
	if floor := now.Add(MinWait); next.Before(floor) {
		next = floor
	}
	return next
}

// Loop runs fn at once, then at each time next names after fn returns, until
// ctx ends; it waits at least MinWait between two runs whatever next says.
func Loop(ctx context.Context, now func() time.Time, next func(time.Time) time.Time, fn func(context.Context)) {
	for {
		fn(ctx)
		if ctx.Err() != nil {
			return
		}
		t := now()
		wait := max(next(t).Sub(t), MinWait)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}
