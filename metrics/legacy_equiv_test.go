package metrics

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/backupverify/backupverify/verifier"
)

// manyTargets: n targets derived from the fixture's, each with its own mix
// of what is known (no backup, no verdict, no archive info, no drill, a
// drill that passed or failed in any phase, checks of shared and own names,
// without a value, freshness lags), names that need escaping, in an order
// that is not sorted.
func manyTargets(n int) snaps {
	rnd := rand.New(rand.NewPCG(13, 1000))
	base := fixture()
	var out snaps
	for i := range n {
		s := base[rnd.IntN(2)]
		s.Target = fmt.Sprintf("t%04d", (i*7919)%n)
		switch i % 50 {
		case 3:
			s.Target += `"quoted"\back\slash` + "\nline"
		case 4:
			s.Target += "-ünïcødé"
		}
		if rnd.IntN(5) == 0 {
			s.Newest = nil
		}
		if rnd.IntN(4) == 0 {
			s.Oldest = time.Time{}
		}
		s.Present = rnd.IntN(40)
		s.VerifiedTotal = rnd.Uint64N(1 << 40)
		s.ScanErrors = rnd.Uint64N(10)
		s.DownloadFailing = rnd.IntN(3) == 0
		s.Missed = rnd.IntN(3) == 0
		s.Failures = map[verifier.Reason]uint64{}
		for _, r := range verifier.Reasons {
			if rnd.IntN(2) == 0 {
				s.Failures[r] = rnd.Uint64N(100)
			}
		}
		if s.LastResult != nil {
			lr := *s.LastResult
			lr.OK = rnd.IntN(2) == 0
			switch rnd.IntN(3) {
			case 0:
				lr.Archive = verifier.ArchiveInfo{}
			case 1:
				lr.Archive.Database = fmt.Sprintf("db_%d \"x\"", i)
				lr.Archive.DumpVersion = fmt.Sprintf("%d.%d", 12+i%6, i%20)
			}
			s.LastResult = &lr
		}
		if rnd.IntN(4) == 0 {
			s.LastVerified = nil
		}
		dr := s.Drill
		dr.Failures = map[verifier.Phase]uint64{}
		for _, p := range verifier.Phases {
			if rnd.IntN(2) == 0 {
				dr.Failures[p] = rnd.Uint64N(9)
			}
		}
		if dr.Last != nil {
			last := *dr.Last
			last.OK = rnd.IntN(3) == 0
			last.FailedPhase = verifier.Phases[rnd.IntN(len(verifier.Phases))]
			last.Phases = append([]verifier.PhaseResult(nil), last.Phases[:rnd.IntN(len(last.Phases)+1)]...)
			for j := range last.Phases {
				last.Phases[j].Seconds = verifier.Seconds(rnd.Float64() * 1000)
			}
			dr.Last = &last
		}
		if dr.LastChecked != nil {
			lc := *dr.LastChecked
			lc.Checks = nil
			for j := range rnd.IntN(6) {
				c := verifier.CheckResult{Name: fmt.Sprintf("count:table_%d_%d", j, rnd.IntN(3)), Kind: "count", OK: rnd.IntN(2) == 0}
				if j%3 == 2 {
					c.Name, c.Kind = fmt.Sprintf("freshness:t%d_%d.at", j, i%5), verifier.CheckFreshness
				}
				if j == 4 {
					c.Name = fmt.Sprintf("sql:own_%d", i)
				}
				if rnd.IntN(4) != 0 {
					c.Value = fp(rnd.Float64() * 1e6)
				}
				lc.Checks = append(lc.Checks, c)
			}
			dr.LastChecked = &lc
		}
		dr.InProgress = rnd.IntN(10) == 0
		s.Drill = dr
		out = append(out, s)
	}
	return out
}

// TestExpositionMatchesLegacy: the scrape of 250 varied targets is byte for
// byte the one the former construction (a MustNewConstMetric per series
// collected by the registry, legacyCollector) gives, in every format promhttp
// negotiates: NewRegistry's (the daemon's) and a plain registry's that
// collects the Collector.
func TestExpositionMatchesLegacy(t *testing.T) {
	s := manyTargets(250)
	now := func() time.Time { return t0 }
	bi := BuildInfo{Version: "v1", Revision: "abc"}
	serve := func(g prometheus.Gatherer) *httptest.Server {
		// Without the go_ and process_ families and the daemon-wide
		// counters' creation times, which change by the scrape or registry.
		own := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			mfs, err := g.Gather()
			var out []*dto.MetricFamily
			for _, mf := range mfs {
				if strings.HasPrefix(mf.GetName(), "go_") || strings.HasPrefix(mf.GetName(), "process_") {
					continue
				}
				if byName[mf.GetName()] == nil {
					for _, m := range mf.Metric {
						if m.Counter != nil {
							m.Counter.CreatedTimestamp = nil
						}
					}
				}
				out = append(out, mf)
			}
			return out, err
		})
		srv := httptest.NewServer(promhttp.HandlerFor(own, promhttp.HandlerOpts{EnableOpenMetrics: true}))
		t.Cleanup(srv.Close)
		return srv
	}
	plain := func(c prometheus.Collector) *prometheus.Registry {
		reg := prometheus.NewRegistry()
		reg.MustRegister(c)
		return reg
	}
	registries := func(s snaps) (daemon, legacy *Registry) {
		daemon = NewRegistry(s, now, bi)
		// NewRegistry as it was: the legacy collector registered in place
		// of the per-target families.
		legacy = NewRegistry(snaps(nil), now, bi)
		if !legacy.Registry.Unregister(describer{}) {
			t.Fatal("describer not registered")
		}
		legacy.Registry.MustRegister(&legacyCollector{snap: s, now: now})
		for _, r := range []*Registry{daemon, legacy} {
			r.ReloadOK.Set(1)
			r.LoopRestarts.WithLabelValues("drill").Inc()
		}
		return daemon, legacy
	}
	sorted := append(snaps(nil), s...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Target < sorted[j].Target })
	d, l := registries(s)
	ds, ls := registries(sorted)
	for _, c := range []struct {
		name      string
		got, want *httptest.Server
	}{
		{"NewRegistry", serve(d), serve(l)},
		{"NewRegistry sorted", serve(ds), serve(ls)}, // as the daemon's Statuses come
		{"Collector.Collect", serve(plain(NewCollector(s, now))), serve(plain(&legacyCollector{snap: s, now: now}))},
	} {
		t.Run(c.name, func(t *testing.T) { compareScrapes(t, c.got.URL, c.want.URL) })
	}
}

// TestGatherRefusesWhatRegistryRefuses: two targets of the same name, or a
// label value that is not UTF-8, make the Gather fail (promhttp answers 500)
// as the registry's checks did, instead of serving duplicate or invalid series.
func TestGatherRefusesWhatRegistryRefuses(t *testing.T) {
	dup := fixture()
	dup[1].Target = dup[0].Target
	bad := fixture()
	bad[0].Drill.LastChecked = &verifier.DrillResult{Checks: []verifier.CheckResult{{Name: "count:" + string([]byte{0xff})}}}
	for name, s := range map[string]snaps{"duplicate target": dup, "invalid UTF-8": bad} {
		reg := NewRegistry(s, func() time.Time { return t0 }, BuildInfo{})
		if _, err := reg.Gather(); err == nil {
			t.Errorf("%s: Gather gave no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestHeaderStringsNotUTF8: a database name in a dump's header is the
// database's bytes (LATIN1 here); backup_info shows it with U+FFFD for what
// is not UTF-8, and the scrape succeeds.
func TestHeaderStringsNotUTF8(t *testing.T) {
	s := fixture()
	s[0].LastResult.Archive.Database = "caf\xe9"
	s[0].LastResult.Archive.DumpVersion = "15.\xff"
	reg := NewRegistry(s, func() time.Time { return t0 }, BuildInfo{})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != "backupverify_backup_info" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["target"] == s[0].Target {
				if l["database"] != "caf\uFFFD" || l["pg_dump_version"] != "15.\uFFFD" {
					t.Errorf("backup_info labels %v", l)
				}
				return
			}
		}
	}
	t.Fatalf("no backup_info series for %s", s[0].Target)
}

func compareScrapes(t *testing.T, got, want string) {
	families := map[string]bool{}
	for _, accept := range []string{
		"text/plain;version=0.0.4",
		"application/openmetrics-text;version=1.0.0",
		"application/openmetrics-text;version=0.0.1",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
		"text/plain;version=1.0.0;escaping=allow-utf-8",
	} {
		g, w := scrape(t, got, accept), scrape(t, want, accept)
		if !bytes.Equal(g, w) {
			t.Errorf("Accept %s: exposition differs (%d vs %d bytes)\n%s", accept, len(g), len(w), firstDiff(g, w))
		}
		if bytes.HasPrefix([]byte(accept), []byte("application/openmetrics")) && !bytes.HasSuffix(w, []byte("# EOF\n")) {
			t.Errorf("Accept %s: not answered in OpenMetrics", accept)
		}
		if accept == "text/plain;version=0.0.4" {
			for _, l := range bytes.Split(w, []byte("\n")) {
				if bytes.HasPrefix(l, []byte("# TYPE ")) {
					families[string(bytes.Fields(l)[2])] = true
				}
			}
		}
	}
	// The comparison covers every family of the collector.
	for _, f := range allDescs {
		if !families[f.name] {
			t.Errorf("%s is absent from the compared scrape", f.name)
		}
	}
}

func scrape(t *testing.T, url, accept string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", accept)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %v %s %s", accept, err, resp.Status, b)
	}
	return b
}

// firstDiff shows where a and b part.
func firstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo := max(0, i-200)
	return fmt.Sprintf("at byte %d:\n got …%q\nwant …%q", i, a[lo:min(len(a), i+200)], b[lo:min(len(b), i+200)])
}
