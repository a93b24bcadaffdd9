package metrics

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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

// TestExpositionMatchesLegacy: the target collector's scrape of 600 varied
// targets is byte for byte the one the former construction (a
// MustNewConstMetric per series, legacyCollector) gives, in every format
// promhttp negotiates.
func TestExpositionMatchesLegacy(t *testing.T) {
	s := manyTargets(600)
	now := func() time.Time { return t0 }
	serve := func(c prometheus.Collector) *httptest.Server {
		reg := prometheus.NewRegistry()
		reg.MustRegister(c)
		return httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	}
	got, want := serve(NewCollector(s, now)), serve(&legacyCollector{snap: s, now: now})
	defer got.Close()
	defer want.Close()
	families := map[string]bool{}
	for _, accept := range []string{
		"text/plain;version=0.0.4",
		"application/openmetrics-text;version=1.0.0",
		"application/openmetrics-text;version=0.0.1",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
		"text/plain;version=1.0.0;escaping=allow-utf-8",
	} {
		g, w := scrape(t, got.URL, accept), scrape(t, want.URL, accept)
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
	for _, d := range allDescs {
		name := d.String()
		name = name[len(`Desc{fqName: "`):]
		name = name[:bytes.IndexByte([]byte(name), '"')]
		if !families[name] {
			t.Errorf("%s is absent from the compared scrape", name)
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
