// Package scheduler runs named jobs on cron schedules (robfig/cron/v3): one run
// of a job at a time, at most a fixed number of runs of all jobs at once (the
// rest wait their turn), panics recovered, runs cancelled and awaited on Stop.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
)

// Job is one run of a scheduled job; trigger says why it runs.
type Job func(ctx context.Context, trigger string)

// ErrRunning is returned by RunNow while the job is already running.
var ErrRunning = errors.New("already running")

// ErrUnknown is returned for a name that is not scheduled.
var ErrUnknown = errors.New("no such job")

// Scheduler runs jobs. The zero value is not usable; call New.
type Scheduler struct {
	log  *slog.Logger
	cron *cron.Cron
	sem  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	entries map[string]*entry
	stopped bool
	wg      sync.WaitGroup
}

type entry struct {
	name  string
	spec  string
	sched cron.Schedule
	id    cron.EntryID
	job   Job
	busy  *atomic.Bool // a run is waiting for a slot or running; shared across Set
}

// New returns a started scheduler running at most maxConcurrent jobs at once.
func New(maxConcurrent int, log *slog.Logger) *Scheduler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{log: log, cron: cron.New(), sem: make(chan struct{}, max(maxConcurrent, 1)),
		ctx: ctx, cancel: cancel, entries: map[string]*entry{}}
	s.cron.Start()
	return s
}

// Set schedules job under name, replacing any job of that name. A run of
// the old job in progress finishes; the new schedule applies from now.
func (s *Scheduler) Set(name, spec string, job Job) error {
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return fmt.Errorf("schedule %q: %w", spec, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &entry{name: name, spec: spec, sched: sched, job: job, busy: new(atomic.Bool)}
	if old, ok := s.entries[name]; ok {
		s.cron.Remove(old.id)
		// The run in progress finishes, and still counts: never two at once.
		e.busy = old.busy
		if old.busy.Load() {
			s.log.Info("schedule changed while a run is in progress; it finishes first", "job", name)
		}
	}
	e.id = s.cron.Schedule(sched, cron.FuncJob(func() {
		s.mu.Lock()
		err := s.claim(e)
		s.mu.Unlock()
		if err != nil {
			if err == ErrRunning {
				s.log.Warn("skipping a run: the previous one has not finished", "job", e.name, "trigger", "schedule")
			}
			return
		}
		s.run(e, "schedule")
	}))
	s.entries[name] = e
	return nil
}

// Remove unschedules name. A run in progress finishes.
func (s *Scheduler) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[name]; ok {
		s.cron.Remove(e.id)
		delete(s.entries, name)
	}
}

// ErrStopped is returned by RunNow once the scheduler is stopping.
var ErrStopped = errors.New("the scheduler is stopping")

// RunNow starts a run of name in the background, as the schedule would.
// Checking and starting are one step: nil means the run was started (it
// may wait for a slot), ErrRunning that one is already running or queued.
func (s *Scheduler) RunNow(name, trigger string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[name]
	if !ok {
		return ErrUnknown
	}
	if err := s.claim(e); err != nil {
		return err
	}
	go s.run(e, trigger)
	return nil
}

// claim marks e busy and counts its run in the wait group Stop waits on;
// ErrRunning if a run is in progress or queued, ErrStopped after Stop. The
// caller holds s.mu, so that Stop either sees the run or refuses it.
func (s *Scheduler) claim(e *entry) error {
	if s.stopped {
		return ErrStopped
	}
	if !e.busy.CompareAndSwap(false, true) {
		return ErrRunning
	}
	s.wg.Add(1)
	return nil
}

// Next is the time of name's next scheduled run (zero if unknown).
func (s *Scheduler) Next(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[name]; ok {
		return s.cron.Entry(e.id).Next
	}
	return time.Time{}
}

// Interval is the time between name's next two scheduled runs.
func (s *Scheduler) Interval(name string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[name]
	if !ok {
		return 0
	}
	return e.interval(time.Now())
}

// interval is the time between e's next two runs after now.
func (e *entry) interval(now time.Time) time.Duration {
	n := e.sched.Next(now)
	return e.sched.Next(n).Sub(n)
}

// State is one job's schedule as Jobs sees it.
type State struct {
	Next     time.Time     // the next scheduled run
	Interval time.Duration // the time between the next two
	Running  bool          // a run is in progress or waiting for a slot
}

// Jobs returns every job's State from one look at the cron's entries:
// asking Next name by name copies all of them each time, which with 1,000
// targets was 28% of the daemon's CPU while it was scraped.
func (s *Scheduler) Jobs() map[string]State {
	now := time.Now()
	// Under s.mu, as Next: a Set in between would give a job an entry the
	// cron's copy does not hold yet.
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[cron.EntryID]time.Time, len(s.entries))
	for _, ce := range s.cron.Entries() {
		next[ce.ID] = ce.Next
	}
	out := make(map[string]State, len(s.entries))
	for name, e := range s.entries {
		out[name] = State{Next: next[e.id], Interval: e.interval(now), Running: e.busy.Load()}
	}
	return out
}

// Running says whether a run of name is in progress or waiting for a slot.
func (s *Scheduler) Running(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[name]
	return ok && e.busy.Load()
}

// run runs e, claimed by claim; it releases the claim when done.
func (s *Scheduler) run(e *entry, trigger string) {
	defer s.wg.Done()
	defer e.busy.Store(false)

	select {
	case s.sem <- struct{}{}:
	default:
		s.log.Info("waiting for a free slot (drills.max_concurrent)", "job", e.name, "trigger", trigger)
		select {
		case s.sem <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("job panicked", "job", e.name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
		<-s.sem
	}()
	e.job(s.ctx, trigger)
}

// Stop stops scheduling, cancels the runs in progress and waits for them,
// at most timeout. It reports whether every run ended in time.
func (s *Scheduler) Stop(timeout time.Duration) bool {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.cron.Stop() // no new runs; the ones in progress are cancelled next
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
