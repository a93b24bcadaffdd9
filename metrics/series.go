package metrics

import (
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/backupverify/backupverify/verifier"
)

// The per-target families are built here as dto.MetricFamily, directly:
// not with a prometheus.MustNewConstMetric per series (which allocates and
// sorts a label-pair slice, a dto.Metric and a value for each), and not
// through the registry's collect channel and per-series checks (a hash,
// a map entry and label validation for each series), which together were
// more than half of a scrape of 1,000 targets (BenchmarkScrape). A target's
// label pair and the slices holding it are built once per scrape and
// shared, read-only, by every series that carries them; series and label
// pairs are allocated in chunks. What is served is what the registry made
// of MustNewConstMetric's series, byte for byte: labels sorted by name,
// series sorted as the registry sorts them, families by name
// (TestExpositionMatchesLegacy). What the registry's checks would refuse
// (a label value that is not UTF-8, the same labels twice) is an error of
// the Gather here too.

// Label names, pointed to by the label pairs of every scrape (read-only).
var (
	lnTarget      = "target"
	lnReason      = "reason"
	lnPhase       = "phase"
	lnCheck       = "check"
	lnDatabase    = "database"
	lnFormat      = "format"
	lnDumpVersion = "pg_dump_version"
)

var (
	typeGauge   = dto.MetricType_GAUGE
	typeCounter = dto.MetricType_COUNTER
)

// gaugeSample and counterSample are one series with the storage of its
// value. Two types, not one holding both: a Gauge and a Counter in every
// series made a scrape allocate 21% more (BenchmarkScrape, 12.2 → 14.8 MB).
type gaugeSample struct {
	m dto.Metric
	g dto.Gauge
	v float64
}

type counterSample struct {
	m dto.Metric
	c dto.Counter
	v float64
}

// pairValue is a label pair with the storage of its value.
type pairValue struct {
	p dto.LabelPair
	v string
}

// chunk is how many series, pairs or label pointers one allocation holds.
const chunk = 512

// emitter builds the per-target families of one scrape.
type emitter struct {
	fams     []*dto.MetricFamily // by family.idx; nil until its first series
	n        int                 // targets: the first capacity of a family
	gauges   []gaugeSample
	counters []counterSample
	pairs    []pairValue
	ptrs     []*dto.LabelPair
	err      error // the first label value that is not UTF-8
}

func newEmitter(targets int) *emitter {
	return &emitter{fams: make([]*dto.MetricFamily, len(allDescs)), n: max(targets, 1)}
}

// targetLabels returns, for each status, the one-pair label slice
// {target=<its target>}.
func (e *emitter) targetLabels(statuses []verifier.Status) [][]*dto.LabelPair {
	out := make([][]*dto.LabelPair, len(statuses))
	for i, s := range statuses {
		out[i] = e.labels(e.pair(&lnTarget, s.Target))
	}
	return out
}

func (e *emitter) valid(p *dto.LabelPair) {
	if e.err == nil && !utf8.ValidString(p.GetValue()) {
		e.err = fmt.Errorf("label %s=%q is not valid UTF-8", p.GetName(), p.GetValue())
	}
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
	e.valid(&pv.p)
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

func (e *emitter) gauge(f *family, v float64, labels []*dto.LabelPair) {
	if len(e.gauges) == cap(e.gauges) {
		e.gauges = make([]gaugeSample, 0, chunk)
	}
	e.gauges = e.gauges[:len(e.gauges)+1]
	s := &e.gauges[len(e.gauges)-1]
	s.v = v
	s.g.Value = &s.v
	s.m.Label, s.m.Gauge = labels, &s.g
	e.add(f, &typeGauge, &s.m)
}

func (e *emitter) counter(f *family, v float64, labels []*dto.LabelPair) {
	if len(e.counters) == cap(e.counters) {
		e.counters = make([]counterSample, 0, chunk)
	}
	e.counters = e.counters[:len(e.counters)+1]
	s := &e.counters[len(e.counters)-1]
	s.v = v
	s.c.Value = &s.v
	s.m.Label, s.m.Counter = labels, &s.c
	e.add(f, &typeCounter, &s.m)
}

func (e *emitter) add(f *family, typ *dto.MetricType, m *dto.Metric) {
	mf := e.fams[f.idx]
	if mf == nil {
		mf = &dto.MetricFamily{Name: &f.name, Help: &f.help, Type: typ, Metric: make([]*dto.Metric, 0, e.n)}
		e.fams[f.idx] = mf
	}
	mf.Metric = append(mf.Metric, m)
}

// finish returns the families that have series, sorted by name, their
// series sorted as the registry sorts them.
func (e *emitter) finish() ([]*dto.MetricFamily, error) {
	out := make([]*dto.MetricFamily, 0, len(e.fams))
	err := e.err
	for _, mf := range e.fams {
		if mf == nil {
			continue
		}
		ms := metricSorter(mf.Metric)
		if !sort.IsSorted(ms) {
			sort.Sort(ms)
		}
		for i := 1; i < len(ms) && err == nil; i++ {
			if !ms.Less(i-1, i) {
				err = fmt.Errorf("collected metric %q { %s} was collected before with the same name and label values", mf.GetName(), ms[i])
			}
		}
		out = append(out, mf)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, err
}

// metricSorter orders series as the registry does
// (client_golang/prometheus/internal.MetricSorter): by label values in
// label order; the series here have no timestamps.
type metricSorter []*dto.Metric

func (s metricSorter) Len() int      { return len(s) }
func (s metricSorter) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s metricSorter) Less(i, j int) bool {
	if len(s[i].Label) != len(s[j].Label) {
		return len(s[i].Label) < len(s[j].Label)
	}
	for n, lp := range s[i].Label {
		if vi, vj := lp.GetValue(), s[j].Label[n].GetValue(); vi != vj {
			return vi < vj
		}
	}
	return false
}

// constSeries hands one built series to a registry (Collector.Collect).
type constSeries struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (c constSeries) Desc() *prometheus.Desc { return c.desc }

func (c constSeries) Write(m *dto.Metric) error {
	m.Label, m.Gauge, m.Counter = c.m.Label, c.m.Gauge, c.m.Counter
	return nil
}
