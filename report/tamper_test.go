package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// drills writes a report a day from t0 for each outcome, and returns the
// store, the report names and the drills written.
func drills(t *testing.T, key []byte, retention time.Duration, outcomes ...bool) (*Store, []string, []verifier.DrillResult) {
	t.Helper()
	clock := t0
	s := &Store{Dir: t.TempDir(), Log: quiet(), Now: func() time.Time { return clock }, Retention: retention, SigningKey: key}
	var names []string
	var rs []verifier.DrillResult
	for i, ok := range outcomes {
		r := passing()
		if !ok {
			r = failing()
		}
		r.Started = t0.Add(time.Duration(i) * 24 * time.Hour)
		r.Ended = r.Started.Add(15 * time.Minute)
		clock = r.Ended
		p, _, err := s.Write(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		names, rs = append(names, p.Name), append(rs, r)
	}
	return s, names, rs
}

func problemsOf(t *testing.T, s *Store, recorded ...*verifier.DrillResult) []string {
	t.Helper()
	_, probs, err := s.VerifyTarget("crm", recorded...)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range probs {
		out = append(out, p.Report+" "+p.Kind)
	}
	return out
}

// rewriteHead points HEAD at name with that report's true sha256, as a
// forger who deleted the reports after it would.
func rewriteHead(t *testing.T, s *Store, name string) {
	b, err := os.ReadFile(filepath.Join(s.Dir, "crm", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := json.Marshal(chainHead{Report: name, SHA256: sha(b)})
	os.WriteFile(filepath.Join(s.Dir, "crm", "HEAD"), h, 0o644)
}

func TestWriteRefusesABrokenChain(t *testing.T) {
	s, names, _ := drills(t, nil, 0, true, true)
	newest := filepath.Join(s.Dir, "crm", names[1]+".json")
	b, _ := os.ReadFile(newest)
	os.WriteFile(newest, bytes.Replace(b, []byte(`"ok": true`), []byte(`"ok": false`), 1), 0o644)
	counted := map[string]int{}
	s.OnError = func(op string) { counted[op]++ }
	r := passing()
	r.Started = t0.Add(72 * time.Hour)
	_, _, err := s.Write(context.Background(), r)
	if !errors.Is(err, ErrBrokenChain) || !strings.Contains(err.Error(), names[1]+" was altered") {
		t.Fatalf("write onto an altered newest report: %v, want ErrBrokenChain naming %s", err, names[1])
	}
	if counted["write"] != 1 {
		t.Errorf("report errors counted %v, want one write", counted)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "crm", r.Started.Format(nameLayout)+".json")); err == nil {
		t.Error("a report was written onto the broken chain")
	}
	// The altered report is still named by verify: it was not laundered.
	if got := problemsOf(t, s); strings.Join(got, ",") != names[1]+" altered" {
		t.Errorf("problems %v", got)
	}
}

func TestVerifyTargetCatchesWhatTheChainCannot(t *testing.T) {
	t.Run("newest FAIL deleted, HEAD rewritten", func(t *testing.T) {
		s, names, rs := drills(t, nil, 0, true, true, false)
		os.Remove(filepath.Join(s.Dir, "crm", names[2]+".json"))
		os.Remove(filepath.Join(s.Dir, "crm", names[2]+".md"))
		rewriteHead(t, s, names[1])
		if _, probs, _ := s.Verify("crm"); len(probs) != 0 {
			t.Fatalf("the chain alone should look intact after this forgery: %v", probs)
		}
		if got := problemsOf(t, s, &rs[2], &rs[1]); strings.Join(got, ",") != names[2]+" missing" {
			t.Errorf("problems %v, want %s missing", got, names[2])
		}
	})
	t.Run("a report's outcome rewritten in both twins and the chain", func(t *testing.T) {
		s, names, rs := drills(t, nil, 0, true, false)
		// A careful forger rewrites the FAIL as a PASS and re-chains HEAD.
		p := filepath.Join(s.Dir, "crm", names[1]+".json")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, bytes.Replace(b, []byte(`"ok": false`), []byte(`"ok": true`), 1), 0o644)
		rewriteHead(t, s, names[1])
		if got := problemsOf(t, s, &rs[1]); strings.Join(got, ",") != names[1]+" altered" {
			t.Errorf("problems %v, want %s altered (drill.json says FAIL)", got, names[1])
		}
	})
	t.Run("whole target folder deleted", func(t *testing.T) {
		s, _, rs := drills(t, nil, 0, true, false)
		os.RemoveAll(filepath.Join(s.Dir, "crm"))
		if got := problemsOf(t, s, &rs[1], &rs[0]); strings.Join(got, ",") != "crm/ missing" {
			t.Errorf("problems %v, want the folder named missing", got)
		}
	})
	t.Run("oldest deleted, pruned.json forged", func(t *testing.T) {
		s, names, rs := drills(t, nil, 30*24*time.Hour, true, true, true)
		os.Remove(filepath.Join(s.Dir, "crm", names[0]+".json"))
		os.Remove(filepath.Join(s.Dir, "crm", names[0]+".md"))
		b, _ := os.ReadFile(filepath.Join(s.Dir, "crm", names[1]+".json"))
		var rep Report
		json.Unmarshal(b, &rep)
		pj, _ := json.Marshal(pruned{Through: names[0], SHA256: rep.PreviousSHA256, Count: 1})
		os.WriteFile(filepath.Join(s.Dir, "crm", "pruned.json"), pj, 0o644)
		if got := problemsOf(t, s, &rs[2]); strings.Join(got, ",") != "pruned.json altered" {
			t.Errorf("problems %v, want pruned.json named: the report was younger than retention", got)
		}
	})
	t.Run("genuine pruning is no problem", func(t *testing.T) {
		s, _, rs := drills(t, nil, 36*time.Hour, true, true, true, true)
		if got := problemsOf(t, s, &rs[3], &rs[0]); len(got) != 0 {
			t.Errorf("problems %v after genuine pruning", got)
		}
	})
}

// TestSigningKeyStopsAForger: without a key, a forger who rewrites a report
// and re-chains every later report and HEAD goes unnoticed; with one, each
// forged file is named.
func TestSigningKeyStopsAForger(t *testing.T) {
	forge := func(s *Store, names []string) {
		dir := filepath.Join(s.Dir, "crm")
		prevSum := ""
		for i, n := range names {
			p := filepath.Join(dir, n+".json")
			b, _ := os.ReadFile(p)
			var rep Report
			json.Unmarshal(b, &rep)
			if i == 1 {
				rep.Drill.OK, rep.Outcome.Pass = true, true
			}
			if i > 0 {
				rep.PreviousSHA256 = prevSum
			}
			md := Markdown(rep)
			rep.MarkdownSHA256 = sha(md)
			js, _ := json.MarshalIndent(rep, "", "  ")
			js = append(js, '\n')
			os.WriteFile(p, js, 0o644)
			os.WriteFile(filepath.Join(dir, n+".md"), md, 0o644)
			prevSum = sha(js)
		}
		rewriteHead(t, s, names[len(names)-1])
	}
	s, names, _ := drills(t, nil, 0, true, false, true)
	forge(s, names)
	if got := problemsOf(t, s); len(got) != 0 {
		t.Fatalf("unsigned: the forgery should pass unnoticed, got %v", got)
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	s, names, _ = drills(t, key, 0, true, false, true)
	forge(s, names)
	got := problemsOf(t, s)
	want := []string{names[1] + " forged", names[2] + " forged", "HEAD forged"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("signed: problems %v, want %v", got, want)
	}
	// And the daemon refuses to write onto the forged chain.
	r := passing()
	r.Started = t0.Add(96 * time.Hour)
	if _, _, err := s.Write(context.Background(), r); !errors.Is(err, ErrBrokenChain) {
		t.Errorf("write onto a forged chain: %v", err)
	}
	// A wrong key sees every file as forged.
	s.SigningKey = []byte("another key of thirty-two bytes!")
	if got := problemsOf(t, s); len(got) < 4 {
		t.Errorf("with the wrong key: %v", got)
	}
}
