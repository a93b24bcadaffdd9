package report

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// Markdown renders a report as a DR drill report: outcome table, backup
// details, a T+ timeline, restoration metrics, integrity table, problems
// found, and the audit trail. It is deterministic for a given report.
func Markdown(rep Report) []byte {
	r, o := rep.Drill, rep.Outcome
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	w("# Restore drill report: %s\n\n", esc(r.Target))
	w("| | |\n|---|---|\n")
	w("| Report | %s |\n", rep.Name)
	w("| Drill started | %s |\n", utc(r.Started))
	w("| Drill ended | %s |\n", utc(r.Ended))
	w("| Trigger | %s |\n", esc(r.Trigger))
	w("| Performed by | backupverify (%s) |\n\n", performedBy(r.Trigger))

	w("## 1. Outcome: %s\n\n", passFail(o.Pass))
	switch {
	case !r.OK:
		w("The drill failed in the **%s** phase: %s\n\n", r.FailedPhase, esc(firstLine(r.Error)))
	case !o.Pass:
		var missed []string
		if !o.RTOPass {
			missed = append(missed, "RTO")
		}
		if !o.RPOPass {
			missed = append(missed, "RPO")
		}
		w("The backup was restored and checked, but the drill missed its %s objective: the outcome is PASS only when every row below passes.\n\n",
			strings.Join(missed, " and "))
	}
	w("| Metric | Target | Actual | Status |\n|--------|--------|--------|--------|\n")
	rtoActual := dur(o.RTOActual)
	if !r.OK {
		rtoActual += " (drill failed)"
	}
	w("| RTO (Recovery Time Objective) | ≤ %s | %s | %s |\n", dur(o.RTOTarget), rtoActual, passFail(o.RTOPass))
	if r.Backup.Created.IsZero() {
		w("| RPO (Recovery Point Objective) | ≤ %s | unknown (no backup read) | FAIL |\n", dur(o.RPOTarget))
	} else {
		w("| RPO (Recovery Point Objective) | ≤ %s | %s | %s |\n", dur(o.RPOTarget), dur(o.RPOActual), passFail(o.RPOPass))
	}
	switch {
	case r.Phase(verifier.PhaseChecks) == nil:
		w("| Data integrity | all checks pass | not checked (the drill stopped before the checks) | FAIL |\n")
	case o.ChecksTotal == 0:
		w("| Data integrity | all checks pass | no checks configured; the restore succeeded | PASS |\n")
	default:
		w("| Data integrity | %d of %d checks pass (100%%) | %d of %d (%s) | %s |\n", o.ChecksTotal, o.ChecksTotal,
			o.ChecksPassed, o.ChecksTotal, pct(o.ChecksPassed, o.ChecksTotal), passFail(o.IntegrityPass))
	}
	w("\n")

	bk := r.Backup
	w("## 2. Backup\n\n| | |\n|---|---|\n")
	w("| Source | %s |\n", esc(bk.Source))
	w("| Key | %s |\n", orDash(esc(bk.Key)))
	if bk.Size > 0 {
		w("| Size | %s (%d bytes) |\n", size(bk.Size), bk.Size)
	}
	if !bk.Created.IsZero() {
		from := "archive header"
		if bk.Archive.Created.IsZero() || !bk.Archive.Created.Equal(bk.Created) {
			from = "object's last modification"
		}
		w("| Created | %s (%s) |\n", utc(bk.Created), from)
		w("| Age at drill start | %s |\n", dur(o.RPOActual))
	}
	sum := "not computed"
	if bk.SHA256 != "" {
		sum = "sha256 `" + bk.SHA256 + "`"
	}
	w("| Checksum | %s |\n", sum)
	if bk.ChecksumFrom != "" {
		w("| Checked against | %s |\n", esc(bk.ChecksumFrom))
	}
	if bk.Archive.Format != "" {
		format := "pg_dump " + bk.Archive.Format
		if bk.Archive.ArchiveVer != "" {
			format += ", archive version " + bk.Archive.ArchiveVer
		}
		w("| Format | %s |\n", format)
	}
	if bk.Archive.DumpVersion != "" {
		w("| pg_dump version | %s |\n", esc(bk.Archive.DumpVersion))
	}
	if bk.Archive.ServerVersion != "" {
		w("| Source server version | %s |\n", esc(bk.Archive.ServerVersion))
	}
	if bk.Archive.Database != "" {
		w("| Database | %s |\n", esc(bk.Archive.Database))
	}
	w("\n")

	w("## 3. Timeline\n\n| Time | Action | Duration | Status |\n|------|--------|----------|--------|\n")
	for _, p := range r.Phases {
		w("| T+%s | %s | %s | %s |\n", dur(p.Started.Sub(r.Started).Seconds()), action(p.Phase, r), dur(float64(p.Seconds)), phaseStatus(p))
	}
	w("| T+%s | Scratch removed, drill ended | - | %s |\n\n", dur(r.Ended.Sub(r.Started).Seconds()), passFail(r.OK))

	w("## 4. Restoration metrics\n\n| Phase | Duration | Share |\n|-------|----------|-------|\n")
	total := r.Ended.Sub(r.Started).Seconds()
	for _, p := range r.Phases {
		w("| %s | %s | %s |\n", p.Phase, dur(float64(p.Seconds)), pctf(float64(p.Seconds), total))
	}
	label := "Total (RTO)"
	if !r.OK {
		label = "Total (drill failed: no RTO)"
	}
	w("| **%s** | **%s** | 100%% |\n\n", label, dur(total))
	w("Scratch: %s", esc(r.Scratch))
	if r.ServerVersion != "" {
		w(", PostgreSQL %s", esc(r.ServerVersion))
	}
	if r.Database != "" {
		w(", database `%s`", esc(r.Database))
	}
	w(", %d parallel job(s)", r.Jobs)
	if r.Restore.Tool != "" {
		w(", restored with %s, %d table(s)", r.Restore.Tool, r.Restore.Tables)
	}
	w(".\n\n")

	w("## 5. Data integrity\n\n")
	if len(r.Checks) == 0 {
		w("No integrity checks are configured for this target.\n\n")
	} else {
		w("| Check | Expected | Actual | Status |\n|-------|----------|--------|--------|\n")
		for _, c := range r.Checks {
			w("| %s | %s | %s | %s |\n", esc(c.Name), orDash(esc(c.Expected)), esc(c.Actual), passFail(c.OK))
		}
		w("\n")
	}

	w("## 6. Problems found\n\n")
	var probs []string
	for _, p := range r.Phases {
		if !p.OK && !(p.Phase == verifier.PhaseChecks && len(r.Checks) > 0) {
			probs = append(probs, fmt.Sprintf("**%s** failed: %s", p.Phase, esc(p.Error)))
		}
	}
	for _, c := range r.Checks {
		if !c.OK {
			msg := fmt.Sprintf("**check %s** failed: expected %s, actual %s", esc(c.Name), orDash(esc(c.Expected)), esc(c.Actual))
			if c.Error != "" {
				msg += " (" + esc(c.Error) + ")"
			}
			probs = append(probs, msg)
		}
	}
	for _, e := range r.Restore.IgnoredErrors {
		probs = append(probs, "restore error accepted by drill.allow_errors: "+esc(e))
	}
	if r.OK && !o.RTOPass {
		probs = append(probs, fmt.Sprintf("the drill took %s, over the RTO objective of %s", dur(o.RTOActual), dur(o.RTOTarget)))
	}
	if !bk.Created.IsZero() && !o.RPOPass {
		probs = append(probs, fmt.Sprintf("the backup was %s old, over the RPO objective of %s", dur(o.RPOActual), dur(o.RPOTarget)))
	}
	if len(probs) == 0 {
		w("None.\n\n")
	}
	for _, p := range probs {
		w("- %s\n", p)
	}
	if len(probs) > 0 {
		w("\n")
	}

	w("## 7. Audit trail\n\n| | |\n|---|---|\n")
	w("| This report | `%s/%s.md`, with its JSON twin `%s.json` |\n", esc(r.Target), rep.Name, rep.Name)
	if rep.Previous == "" {
		w("| Previous report | none: this is the first report of %s |\n", esc(r.Target))
	} else {
		w("| Previous report | `%s.json`, sha256 `%s` |\n", rep.Previous, rep.PreviousSHA256)
	}
	w("| Verify the chain | `backupverify reports verify --config FILE --target %s` |\n", esc(r.Target))
	return []byte(b.String())
}

// performedBy names what started the drill.
func performedBy(trigger string) string {
	switch trigger {
	case verifier.TriggerSchedule:
		return "schedule"
	case verifier.TriggerCatchUp:
		return "catch-up at start: the last drill was older than the drill interval"
	case verifier.TriggerAPI:
		return "manual trigger via API"
	case verifier.TriggerCLI, "manual":
		return "cli"
	}
	return "trigger " + esc(trigger)
}

func action(p verifier.Phase, r verifier.DrillResult) string {
	switch p {
	case verifier.PhaseDownload:
		return "Download of the newest backup"
	case verifier.PhaseVerify:
		return "Verification (sha256, full archive read)"
	case verifier.PhaseRestore:
		return fmt.Sprintf("Restore into scratch (%s)", esc(r.Scratch))
	default:
		return fmt.Sprintf("Integrity checks (%d)", len(r.Checks))
	}
}

func phaseStatus(p verifier.PhaseResult) string {
	if p.OK {
		return "Completed"
	}
	return "FAILED"
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func utc(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// dur writes seconds the way a person would: 850ms, 12.4s, 47m 12s, 1h 3m.
func dur(s float64) string {
	switch {
	case s < 0:
		return "-" + dur(-s)
	case s == 0:
		return "0s"
	case s < 1:
		return fmt.Sprintf("%dms", int(math.Round(s*1000)))
	case s < 60:
		return fmt.Sprintf("%.1fs", s)
	case s < 3600:
		return fmt.Sprintf("%dm %ds", int(s)/60, int(s)%60)
	case s < 86400:
		return fmt.Sprintf("%dh %dm", int(s)/3600, int(s)%3600/60)
	default:
		return fmt.Sprintf("%dd %dh", int(s)/86400, int(s)%86400/3600)
	}
}

func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func pct(a, b int) string { return pctf(float64(a), float64(b)) }

func pctf(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// esc keeps text from config, S3 keys or error messages from breaking a
// table row, and from becoming markup when a Markdown viewer (a wiki, a Git
// forge, an auditor's editor) renders the report: HTML is escaped as
// entities, link brackets with backslashes, and what would be auto-linked
// (scheme://, www., user@host) is broken with an entity, so a backup key
// cannot put a script, an image or a link into a report.
var mdEscaper = strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ", "`", "'",
	"&", "&amp;", "<", "&lt;", ">", "&gt;", "[", `\[`, "]", `\]`,
	"://", "&#58;//", "www.", "www&#46;", "@", "&#64;")

func esc(s string) string { return mdEscaper.Replace(s) }
