package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/backupverify/backupverify/verifier"
)

// The series of one Collect are built here instead of with
// prometheus.MustNewConstMetric, which allocates and sorts a label-pair
// slice, a dto.Metric and a value for every series: a quarter of a scrape
// of 1,000 targets (BenchmarkScrape). A target's label pair and the slices
// holding it are built once per Collect and shared, read-only, by every
// series that carries them; series and label pairs are allocated in chunks.
// What the registry receives (dto.Metric's labels, sorted by name, and its
// gauge or counter value) is what MustNewConstMetric gave it, so the
// exposition is the same byte for byte (TestExpositionMatchesLegacy).

// Label names, pointed to by the label pairs of every Collect (read-only).
var (
	lnTarget      = "target"
	lnReason      = "reason"
	lnPhase       = "phase"
	lnCheck       = "check"
	lnDatabase    = "database"
	lnFormat      = "format"
	lnDumpVersion = "pg_dump_version"
)

// gaugeSeries is one gauge sample with shared label pairs.
type gaugeSeries struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	v      float64
	g      dto.Gauge
}

func (s *gaugeSeries) Desc() *prometheus.Desc { return s.desc }

func (s *gaugeSeries) Write(m *dto.Metric) error {
	m.Label, m.Gauge = s.labels, &s.g
	return nil
}

// counterSeries is one counter sample with shared label pairs.
type counterSeries struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	v      float64
	c      dto.Counter
}

func (s *counterSeries) Desc() *prometheus.Desc { return s.desc }

func (s *counterSeries) Write(m *dto.Metric) error {
	m.Label, m.Counter = s.labels, &s.c
	return nil
}

// pairValue is a label pair with the storage of its value.
type pairValue struct {
	p dto.LabelPair
	v string
}

// chunk is how many series, pairs or label pointers one allocation holds.
const chunk = 512

// emitter builds and sends the series of one Collect. What it has sent is
// never written again: the registry reads it while Collect goes on.
type emitter struct {
	ch       chan<- prometheus.Metric
	gauges   []gaugeSeries
	counters []counterSeries
	pairs    []pairValue
	ptrs     []*dto.LabelPair
}

func newEmitter(ch chan<- prometheus.Metric) *emitter { return &emitter{ch: ch} }

// targetLabels returns, for each status, the one-pair label slice
// {target=<its target>}.
func (e *emitter) targetLabels(statuses []verifier.Status) [][]*dto.LabelPair {
	pairs := make([]pairValue, len(statuses))
	ptrs := make([]*dto.LabelPair, len(statuses))
	out := make([][]*dto.LabelPair, len(statuses))
	for i, s := range statuses {
		pv := &pairs[i]
		pv.v = s.Target
		pv.p.Name, pv.p.Value = &lnTarget, &pv.v
		ptrs[i] = &pv.p
		out[i] = ptrs[i : i+1 : i+1]
	}
	return out
}

// pair returns the label pair name=value.
func (e *emitter) pair(name *string, value string) *dto.LabelPair {
	if len(e.pairs) == cap(e.pairs) {
		e.pairs = make([]pairValue, 0, chunk)
	}
	e.pairs = e.pairs[:len(e.pairs)+1]
	pv := &e.pairs[len(e.pairs)-1]
	pv.v = value
	pv.p.Name, pv.p.Value = name, &pv.v
	return &pv.p
}

// labels returns a slice of ps, which must be sorted by name.
func (e *emitter) labels(ps ...*dto.LabelPair) []*dto.LabelPair {
	if cap(e.ptrs)-len(e.ptrs) < len(ps) {
		e.ptrs = make([]*dto.LabelPair, 0, max(chunk, len(ps)))
	}
	n := len(e.ptrs)
	e.ptrs = append(e.ptrs, ps...)
	return e.ptrs[n:len(e.ptrs):len(e.ptrs)]
}

func (e *emitter) gauge(d *prometheus.Desc, v float64, labels []*dto.LabelPair) {
	if len(e.gauges) == cap(e.gauges) {
		e.gauges = make([]gaugeSeries, 0, chunk)
	}
	e.gauges = e.gauges[:len(e.gauges)+1]
	s := &e.gauges[len(e.gauges)-1]
	s.desc, s.labels, s.v = d, labels, v
	s.g.Value = &s.v
	e.ch <- s
}

func (e *emitter) counter(d *prometheus.Desc, v float64, labels []*dto.LabelPair) {
	if len(e.counters) == cap(e.counters) {
		e.counters = make([]counterSeries, 0, chunk)
	}
	e.counters = e.counters[:len(e.counters)+1]
	s := &e.counters[len(e.counters)-1]
	s.desc, s.labels, s.v = d, labels, v
	s.c.Value = &s.v
	e.ch <- s
}
