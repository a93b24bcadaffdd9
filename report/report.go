// Package report writes drill reports an auditor can read and check: a
// Markdown report like a hand-written DR drill report, and a JSON twin with
// the same facts that chains each report to the previous one by sha256.
package report

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// Version of the JSON report format.
const Version = 1

// nameLayout names reports by the drill's start, in UTC; it sorts by time.
const nameLayout = "20060102T150405Z"

// Report is the JSON twin of a Markdown drill report.
type Report struct {
	Version int    `json:"version"`
	Name    string `json:"report"`
	Target  string `json:"target"`
	// Previous is the name of the target's previous report, and
	// PreviousSHA256 the sha256 of its JSON file: the hash chain.
	Previous       string               `json:"previous,omitempty"`
	PreviousSHA256 string               `json:"previous_sha256,omitempty"`
	MarkdownSHA256 string               `json:"markdown_sha256"`
	Outcome        Outcome              `json:"outcome"`
	Drill          verifier.DrillResult `json:"drill"`
}

// Outcome is the report's outcome table. Pass is the outcome line: PASS
// only when every row of the table passes (the drill, RTO, RPO and data
// integrity); DrillOK says whether the restore drill itself passed.
type Outcome struct {
	Pass          bool    `json:"pass"`
	DrillOK       bool    `json:"drill_ok"`
	RTOTarget     float64 `json:"rto_target_seconds"`
	RTOActual     float64 `json:"rto_actual_seconds"` // drill time, pass or fail
	RTOPass       bool    `json:"rto_pass"`
	RPOTarget     float64 `json:"rpo_target_seconds"`
	RPOActual     float64 `json:"rpo_actual_seconds"` // backup age at drill start
	RPOPass       bool    `json:"rpo_pass"`
	ChecksTotal   int     `json:"checks_total"`
	ChecksPassed  int     `json:"checks_passed"`
	IntegrityPass bool    `json:"integrity_pass"`
}

// outcome derives the outcome table from a drill.
func outcome(r verifier.DrillResult) Outcome {
	o := Outcome{DrillOK: r.OK, RTOTarget: float64(r.RTOTarget), RPOTarget: float64(r.RPOTarget)}
	o.RTOActual = r.Ended.Sub(r.Started).Seconds()
	o.RTOPass = r.OK && o.RTOActual <= o.RTOTarget
	if !r.Backup.Created.IsZero() {
		o.RPOActual = verifier.BackupAge(r.Backup.Created, r.Started).Seconds()
		o.RPOPass = o.RPOActual <= o.RPOTarget
	}
	o.ChecksTotal = len(r.Checks)
	for _, c := range r.Checks {
		if c.OK {
			o.ChecksPassed++
		}
	}
	// Integrity is proven only by a restore whose checks ran and all passed.
	o.IntegrityPass = r.Phase(verifier.PhaseChecks) != nil && o.ChecksPassed == o.ChecksTotal
	o.Pass = r.OK && o.RTOPass && o.RPOPass && o.IntegrityPass
	return o
}

// Uploader copies a report file elsewhere (S3) for retention off the host.
type Uploader interface {
	Upload(ctx context.Context, key string, body []byte) error
	String() string
}

// Store keeps the reports below Dir/<target>/.
type Store struct {
	Dir       string
	Retention time.Duration
	Upload    Uploader // nil: no copy
	Log       *slog.Logger
	Now       func() time.Time
	// OnError, if set, is called with "write" when a report cannot be
	// written and with "upload" when a copy cannot be uploaded.
	OnError func(op string)
}

func (s *Store) failed(op string) {
	if s.OnError != nil {
		s.OnError(op)
	}
}

// chainHead is the HEAD file: the newest report and its sha256, so that
// altering or removing the newest report is seen too.
type chainHead struct {
	Report string `json:"report"`
	SHA256 string `json:"sha256"`
}

// pruned records what retention removed, so that the chain stays checkable
// from the oldest report kept.
type pruned struct {
	Through string `json:"through"` // newest pruned report
	SHA256  string `json:"sha256"`  // its sha256
	Count   int    `json:"count"`
}

func (s *Store) targetDir(target string) string { return filepath.Join(s.Dir, target) }

// Paths of a written report.
type Paths struct {
	Markdown string
	JSON     string
	Name     string
}

// Write stores the report of a drill, chained to the previous report of its
// target, uploads it when configured, and prunes reports past retention.
func (s *Store) Write(ctx context.Context, r verifier.DrillResult) (Paths, []byte, error) {
	p, md, err := s.write(ctx, r)
	if err != nil {
		s.failed("write")
	}
	return p, md, err
}

func (s *Store) write(ctx context.Context, r verifier.DrillResult) (Paths, []byte, error) {
	dir := s.targetDir(r.Target)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return Paths{}, nil, err
	}
	rep := Report{Version: Version, Name: r.Started.UTC().Format(nameLayout), Target: r.Target, Outcome: outcome(r), Drill: r}
	names, err := s.list(r.Target)
	if err != nil {
		return Paths{}, nil, err
	}
	for len(names) > 0 && names[len(names)-1] >= rep.Name {
		// Two drills in one second: keep names unique and ordered.
		t, _ := time.Parse(nameLayout, names[len(names)-1])
		rep.Name = t.Add(time.Second).Format(nameLayout)
	}
	if len(names) > 0 {
		prev := names[len(names)-1]
		b, err := os.ReadFile(filepath.Join(dir, prev+".json"))
		if err != nil {
			return Paths{}, nil, fmt.Errorf("read previous report: %w", err)
		}
		rep.Previous, rep.PreviousSHA256 = prev, sha(b)
	}
	md := Markdown(rep)
	rep.MarkdownSHA256 = sha(md)
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return Paths{}, nil, err
	}
	js = append(js, '\n')
	p := Paths{Name: rep.Name, Markdown: filepath.Join(dir, rep.Name+".md"), JSON: filepath.Join(dir, rep.Name+".json")}
	if err := verifier.WriteFileAtomic(p.Markdown, md); err != nil {
		return p, md, err
	}
	if err := verifier.WriteFileAtomic(p.JSON, js); err != nil {
		return p, md, err
	}
	head, _ := json.Marshal(chainHead{Report: rep.Name, SHA256: sha(js)})
	if err := verifier.WriteFileAtomic(filepath.Join(dir, "HEAD"), head); err != nil {
		return p, md, err
	}
	if s.Upload != nil {
		for _, f := range []struct {
			name string
			b    []byte
		}{{rep.Name + ".md", md}, {rep.Name + ".json", js}} {
			if err := s.Upload.Upload(ctx, r.Target+"/"+f.name, f.b); err != nil {
				s.Log.Error("upload report failed", "target", r.Target, "report", f.name, "to", s.Upload.String(), "err", err)
				s.failed("upload")
			}
		}
	}
	if err := s.Prune(r.Target); err != nil {
		s.Log.Warn("prune reports", "target", r.Target, "err", err)
	}
	return p, md, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// list returns the target's report names (from their .json files), oldest first.
func (s *Store) list(target string) ([]string, error) {
	ents, err := os.ReadDir(s.targetDir(target))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && n != "pruned" {
			if _, err := time.Parse(nameLayout, n); err == nil {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Targets lists the targets that have reports.
func (s *Store) Targets() ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, err
}

// Latest returns the name of a target's newest report ("" if none).
func (s *Store) Latest(target string) string {
	names, _ := s.list(target)
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1]
}

// Prune removes a target's reports older than the retention, newest kept
// always, and records the newest removed one so the chain stays checkable.
func (s *Store) Prune(target string) error {
	if s.Retention <= 0 {
		return nil
	}
	names, err := s.list(target)
	if err != nil || len(names) < 2 {
		return err
	}
	cutoff := s.Now().Add(-s.Retention).UTC().Format(nameLayout)
	dir := s.targetDir(target)
	var rec pruned
	if b, err := os.ReadFile(filepath.Join(dir, "pruned.json")); err == nil {
		_ = json.Unmarshal(b, &rec)
	}
	removed := 0
	for _, n := range names[:len(names)-1] {
		if n >= cutoff {
			break
		}
		b, err := os.ReadFile(filepath.Join(dir, n+".json"))
		if err != nil {
			return err
		}
		// Record before removing: a crash in between leaves a record of a
		// report that is gone, never a gap without one.
		rec = pruned{Through: n, SHA256: sha(b), Count: rec.Count + 1}
		rb, _ := json.Marshal(rec)
		if err := verifier.WriteFileAtomic(filepath.Join(dir, "pruned.json"), rb); err != nil {
			return err
		}
		if err := errors.Join(os.Remove(filepath.Join(dir, n+".json")), os.Remove(filepath.Join(dir, n+".md"))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed++
	}
	if removed > 0 {
		s.Log.Info("pruned reports past retention", "target", target, "removed", removed, "retention", s.Retention)
	}
	return nil
}

// Problem is one break in a target's chain of reports.
type Problem struct {
	Report string // the report concerned
	Kind   string // altered, missing, unreadable
	Detail string
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s: %s", p.Report, p.Kind, p.Detail) }

// Verify walks a target's chain from the oldest report kept and names every
// report altered or removed. It returns how many reports it checked.
func (s *Store) Verify(target string) (int, []Problem, error) {
	dir := s.targetDir(target)
	names, err := s.list(target)
	if err != nil {
		return 0, nil, err
	}
	var probs []Problem
	var rec pruned
	if b, err := os.ReadFile(filepath.Join(dir, "pruned.json")); err == nil {
		_ = json.Unmarshal(b, &rec)
	}
	// sums of the reports present, for the successor's check.
	type entry struct {
		rep Report
		sum string
		ok  bool
	}
	entries := map[string]entry{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n+".json"))
		if err != nil {
			probs = append(probs, Problem{n, "unreadable", err.Error()})
			continue
		}
		var rep Report
		e := entry{sum: sha(b)}
		if err := json.Unmarshal(b, &rep); err != nil {
			probs = append(probs, Problem{n, "altered", "the JSON report does not parse: " + err.Error()})
		} else {
			e.rep, e.ok = rep, true
		}
		entries[n] = e
		if md, err := os.ReadFile(filepath.Join(dir, n+".md")); err != nil {
			probs = append(probs, Problem{n, "missing", "the Markdown report is gone"})
		} else if e.ok && sha(md) != rep.MarkdownSHA256 {
			probs = append(probs, Problem{n, "altered", "the Markdown report does not match the sha256 its JSON recorded"})
		}
	}
	for i, n := range names {
		e := entries[n]
		if !e.ok {
			continue
		}
		switch {
		case e.rep.Previous == "":
			if i > 0 {
				probs = append(probs, Problem{n, "altered", "it says it is the first report, but older reports exist"})
			}
		case i == 0:
			// The oldest kept report: its predecessor must have been pruned.
			if rec.Through != e.rep.Previous {
				probs = append(probs, Problem{e.rep.Previous, "missing", fmt.Sprintf("report %s names it as its predecessor, and it was not pruned by retention", n)})
			} else if rec.SHA256 != e.rep.PreviousSHA256 {
				probs = append(probs, Problem{n, "altered", "its predecessor's sha256 differs from the one recorded when that report was pruned"})
			}
		case e.rep.Previous != names[i-1]:
			probs = append(probs, Problem{e.rep.Previous, "missing", fmt.Sprintf("report %s names it as its predecessor", n)})
		case entries[names[i-1]].sum != e.rep.PreviousSHA256:
			probs = append(probs, Problem{names[i-1], "altered", fmt.Sprintf("its sha256 is %s, report %s recorded %s", entries[names[i-1]].sum, n, e.rep.PreviousSHA256)})
		}
	}
	if len(names) > 0 {
		last := names[len(names)-1]
		var head chainHead
		b, err := os.ReadFile(filepath.Join(dir, "HEAD"))
		switch {
		case err != nil:
			probs = append(probs, Problem{last, "missing", "the HEAD file naming the newest report is gone"})
		case json.Unmarshal(b, &head) != nil:
			probs = append(probs, Problem{"HEAD", "altered", "the HEAD file does not parse"})
		case head.Report != last:
			probs = append(probs, Problem{head.Report, "missing", "HEAD names it as the newest report"})
		case head.SHA256 != entries[last].sum:
			probs = append(probs, Problem{last, "altered", fmt.Sprintf("its sha256 is %s, HEAD recorded %s", entries[last].sum, head.SHA256)})
		}
	}
	sort.SliceStable(probs, func(i, j int) bool { return probs[i].Report < probs[j].Report })
	return len(names), dedupe(probs), nil
}

func dedupe(ps []Problem) []Problem {
	var out []Problem
	seen := map[string]bool{}
	for _, p := range ps {
		k := p.Report + "\x00" + p.Kind
		if !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out
}
