package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// VerifyTarget is Verify for a configured target, cross-checked against the
// drills the daemon recorded in drill.json (recorded: its last and last
// passing drill, nil when unknown). A drill recorded there must have its
// report, with the same outcome, unless retention pruned it; so a report
// deleted with HEAD rewritten to the one before, or a whole deleted target
// folder, is a problem even though what is left chains perfectly.
func (s *Store) VerifyTarget(target string, recorded ...*verifier.DrillResult) (int, []Problem, error) {
	n, probs, err := s.Verify(target)
	if err != nil {
		return n, probs, err
	}
	dir := s.targetDir(target)
	names, err := s.list(target)
	if err != nil {
		return n, probs, err
	}
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err == nil && len(names) == 0 {
		probs = append(probs, Problem{target + "/", "missing", "HEAD names a report, and no report is left"})
	}
	var rec pruned
	if b, err := os.ReadFile(filepath.Join(dir, "pruned.json")); err == nil {
		_ = json.Unmarshal(b, &rec)
	}
	byStart := map[int64]Report{}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err != nil {
			continue // Verify named it
		}
		var rep Report
		if json.Unmarshal(b, &rep) == nil {
			byStart[rep.Drill.Started.UnixNano()] = rep
		}
	}
	_, statErr := os.Stat(dir)
	folderGone := errors.Is(statErr, fs.ErrNotExist)
	seen := map[int64]bool{}
	for _, d := range recorded {
		if d == nil || seen[d.Started.UnixNano()] {
			continue
		}
		seen[d.Started.UnixNano()] = true
		name := d.Started.UTC().Format(nameLayout)
		rep, ok := byStart[d.Started.UnixNano()]
		switch {
		case ok && rep.Drill.OK != d.OK:
			probs = append(probs, Problem{rep.Name, "altered", fmt.Sprintf("drill.json records this drill as %s, the report as %s", passFail(d.OK), passFail(rep.Drill.OK))})
		case ok:
		case rec.Through != "" && name <= rec.Through:
			// Pruned by retention, and recorded as such.
		case folderGone:
			probs = append(probs, Problem{target + "/", "missing", fmt.Sprintf(
				"the target's reports folder is gone, and drill.json records a drill started %s (%s)", d.Started.UTC().Format(time.RFC3339), passFail(d.OK))})
		default:
			probs = append(probs, Problem{name, "missing", fmt.Sprintf(
				"drill.json records a drill started %s (%s), and no report of it is left", d.Started.UTC().Format(time.RFC3339), passFail(d.OK))})
		}
	}
	return n, dedupe(probs), nil
}
