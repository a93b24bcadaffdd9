// Package report writes drill reports an auditor can read and check: a
// Markdown report like a hand-written DR drill report, and a JSON twin with
// the same facts that chains each report to the previous one by sha256.
package report

import (
	"context"
	"crypto/hmac"
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
	// SigningKey, when set, signs every report, HEAD and pruned.json with
	// HMAC-SHA256, so that someone who can write the reports folder but
	// does not hold the key cannot forge or alter a report unnoticed.
	SigningKey []byte
}

func (s *Store) failed(op string) {
	if s.OnError != nil {
		s.OnError(op)
	}
}

// ErrBrokenChain is returned by Write when the target's chain does not end
// where its HEAD says: a report was altered or removed. No report is
// written onto a broken chain; `backupverify reports verify` says what broke.
var ErrBrokenChain = errors.New("the chain of reports is broken")

// chainHead is the HEAD file: the newest report and its sha256, so that
// altering or removing the newest report is seen too.
type chainHead struct {
	Report string `json:"report"`
	SHA256 string `json:"sha256"`
	HMAC   string `json:"hmac,omitempty"`
}

func (h chainHead) signed() string { return "HEAD\n" + h.Report + "\n" + h.SHA256 }

// pruned records what retention removed, so that the chain stays checkable
// from the oldest report kept.
type pruned struct {
	Through string `json:"through"` // newest pruned report
	SHA256  string `json:"sha256"`  // its sha256
	Count   int    `json:"count"`
	HMAC    string `json:"hmac,omitempty"`
}

func (p pruned) signed() string {
	return fmt.Sprintf("pruned\n%s\n%s\n%d", p.Through, p.SHA256, p.Count)
}

// mac is the hex HMAC-SHA256 of b under the signing key; "" without one.
func (s *Store) mac(b []byte) string {
	if len(s.SigningKey) == 0 {
		return ""
	}
	m := hmac.New(sha256.New, s.SigningKey)
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}

// macOK says whether got is the HMAC of b; always true without a key.
func (s *Store) macOK(b []byte, got string) bool {
	if len(s.SigningKey) == 0 {
		return true
	}
	want, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, s.SigningKey)
	m.Write(b)
	return hmac.Equal(m.Sum(nil), want)
}

// tip checks that the target's chain ends where HEAD says, and returns HEAD
// (zero for a target without reports). Write chains onto it.
func (s *Store) tip(target string, names []string) (chainHead, error) {
	dir := s.targetDir(target)
	var head chainHead
	b, err := os.ReadFile(filepath.Join(dir, "HEAD"))
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(names) == 0:
		return head, nil
	case errors.Is(err, fs.ErrNotExist):
		return head, fmt.Errorf("%w: %s has reports but no HEAD", ErrBrokenChain, dir)
	case err != nil:
		return head, fmt.Errorf("read HEAD: %w", err)
	case json.Unmarshal(b, &head) != nil:
		return head, fmt.Errorf("%w: %s/HEAD does not parse", ErrBrokenChain, dir)
	case !s.macOK([]byte(head.signed()), head.HMAC):
		return head, fmt.Errorf("%w: %s/HEAD is not signed with reports.signing_key_file", ErrBrokenChain, dir)
	case len(names) == 0 || head.Report != names[len(names)-1]:
		return head, fmt.Errorf("%w: HEAD names report %s, the newest in %s is %q", ErrBrokenChain, head.Report, dir, last(names))
	}
	js, err := os.ReadFile(filepath.Join(dir, head.Report+".json"))
	if err != nil {
		return head, fmt.Errorf("read newest report: %w", err)
	}
	if sha(js) != head.SHA256 {
		return head, fmt.Errorf("%w: report %s was altered after it was written (HEAD recorded sha256 %s)", ErrBrokenChain, head.Report, head.SHA256)
	}
	if sig, err := os.ReadFile(filepath.Join(dir, head.Report+".hmac")); len(s.SigningKey) > 0 && (err != nil || !s.macOK(js, strings.TrimSpace(string(sig)))) {
		return head, fmt.Errorf("%w: report %s has no valid signature", ErrBrokenChain, head.Report)
	}
	return head, nil
}

func last(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1]
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
	// Chain to HEAD, checked first: a report altered or removed since the
	// last write is never laundered by a new report chained to it.
	head, err := s.tip(r.Target, names)
	if err != nil {
		return Paths{}, nil, fmt.Errorf("report of %s not written: %w (run backupverify reports verify; to start a new chain, move %s aside and keep it as evidence)", r.Target, err, dir)
	}
	rep.Previous, rep.PreviousSHA256 = head.Report, head.SHA256
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
	if len(s.SigningKey) > 0 {
		if err := verifier.WriteFileAtomic(filepath.Join(dir, rep.Name+".hmac"), []byte(s.mac(js)+"\n")); err != nil {
			return p, md, err
		}
	}
	if err := verifier.WriteFileAtomic(p.JSON, js); err != nil {
		return p, md, err
	}
	nh := chainHead{Report: rep.Name, SHA256: sha(js)}
	nh.HMAC = s.mac([]byte(nh.signed()))
	hb, _ := json.Marshal(nh)
	if err := verifier.WriteFileAtomic(filepath.Join(dir, "HEAD"), hb); err != nil {
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
		rec.HMAC = s.mac([]byte(rec.signed()))
		rb, _ := json.Marshal(rec)
		if err := verifier.WriteFileAtomic(filepath.Join(dir, "pruned.json"), rb); err != nil {
			return err
		}
		_ = os.Remove(filepath.Join(dir, n+".hmac"))
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
		if err := json.Unmarshal(b, &rec); err != nil {
			probs = append(probs, Problem{"pruned.json", "altered", "it does not parse"})
		} else if !s.macOK([]byte(rec.signed()), rec.HMAC) {
			probs = append(probs, Problem{"pruned.json", "forged", "it is not signed with reports.signing_key_file"})
		}
		if t, err := time.Parse(nameLayout, rec.Through); rec.Through != "" && err == nil && s.Retention > 0 && s.Now != nil &&
			!t.Before(s.Now().Add(-s.Retention)) {
			probs = append(probs, Problem{"pruned.json", "altered", fmt.Sprintf(
				"it says report %s was pruned, but that report is younger than reports.retention (%s): retention never removes it", rec.Through, s.Retention)})
		}
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
		if len(s.SigningKey) > 0 {
			sig, err := os.ReadFile(filepath.Join(dir, n+".hmac"))
			if err != nil || !s.macOK(b, strings.TrimSpace(string(sig))) {
				probs = append(probs, Problem{n, "forged", "its JSON has no valid HMAC under reports.signing_key_file"})
			}
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
		case !s.macOK([]byte(head.signed()), head.HMAC):
			probs = append(probs, Problem{"HEAD", "forged", "the HEAD file is not signed with reports.signing_key_file"})
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
