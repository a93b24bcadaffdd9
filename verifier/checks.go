package verifier

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Checks runs a target's integrity checks. Every check runs, each read-only
// under its own statement timeout; one failing does not stop the others.
type Checks struct {
	defs []CheckSpec
}

// NewChecks returns a target's checks.
func NewChecks(defs []CheckSpec) *Checks { return &Checks{defs: defs} }

// Run implements Checker.
// CheckFreshness is the kind of a freshness check: its value is seconds.
const CheckFreshness = "freshness"

// freshnessLag fills a freshness check's result: the backup's time minus its
// newest row's (Unix seconds). A row newer than the backup's time (the
// backup time is the dump's start, or the clocks differ) is a lag of 0,
// and Actual says so.
func freshnessLag(r *CheckResult, created time.Time, newest float64, maxLag time.Duration) {
	lag := float64(created.UnixNano())/1e9 - newest
	newestT := time.Unix(0, int64(newest*1e9)).UTC()
	note := ""
	if lag < 0 {
		note = fmt.Sprintf("; the newest row is %s after the backup's time (rows written while the dump ran, or clocks that differ): counted as lag 0",
			time.Duration(-lag*float64(time.Second)).Round(time.Second))
		lag = 0
	}
	r.Value = &lag
	r.Actual = fmt.Sprintf("lag %s (newest %s%s)", time.Duration(lag*float64(time.Second)).Round(time.Second), newestT.Format(time.RFC3339), note)
	r.OK = lag <= maxLag.Seconds()
}

func (c *Checks) Run(ctx context.Context, db ScratchDB, backup DrillBackup, prev *DrillResult) []CheckResult {
	out := make([]CheckResult, 0, len(c.defs))
	for _, def := range c.defs {
		start := time.Now()
		r := runCheck(ctx, db, def, backup, prev)
		r.Name, r.Seconds = def.Name, secondsOf(time.Since(start))
		if r.Error != "" {
			r.OK = false
			if r.Actual == "" {
				r.Actual = "error"
			}
		}
		out = append(out, r)
	}
	return out
}

// quoteIdent quotes each part of a possibly schema-qualified name.
func quoteIdent(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}

// splitColumn splits table.column (or schema.table.column).
func splitColumn(ref string) (table, column string) {
	i := strings.LastIndexByte(ref, '.')
	return ref[:i], ref[i+1:]
}

func runCheck(ctx context.Context, db ScratchDB, def CheckSpec, backup DrillBackup, prev *DrillResult) CheckResult {
	timeout := def.Timeout
	query := func(sql string) (float64, bool, error) { return db.Query(ctx, sql, timeout) }
	switch {
	case def.Count != "":
		r := CheckResult{Kind: "count"}
		r.Expected, _ = boundsCheck(def, 0)
		if def.MaxDrop != "" {
			r.Expected = joinExpect(r.Expected, "drop ≤ "+def.MaxDrop)
		}
		v, _, err := query("SELECT count(*) FROM " + quoteIdent(def.Count))
		if err != nil {
			r.Error = err.Error()
			return r
		}
		r.Value, r.Actual = &v, formatNum(v)
		r.Expected, r.OK = boundsCheck(def, v)
		if def.MaxDrop != "" {
			exp, ok := maxDrop(def, v, prev)
			r.Expected = joinExpect(r.Expected, exp)
			r.OK = r.OK && ok
		}
		return r
	case def.Orphans != "":
		r := CheckResult{Kind: "orphans", Expected: "0"}
		child, parent, _ := strings.Cut(strings.ReplaceAll(def.Orphans, " ", ""), "->")
		ct, cc := splitColumn(child)
		pt, pc := splitColumn(parent)
		v, _, err := query(fmt.Sprintf("SELECT count(*) FROM %s c WHERE c.%s IS NOT NULL AND NOT EXISTS (SELECT 1 FROM %s p WHERE p.%s = c.%s)",
			quoteIdent(ct), quoteIdent(cc), quoteIdent(pt), quoteIdent(pc), quoteIdent(cc)))
		if err != nil {
			r.Error = err.Error()
			return r
		}
		r.Value, r.Actual, r.OK = &v, formatNum(v), v == 0
		return r
	case def.ForeignKeys:
		return foreignKeys(ctx, db, timeout)
	case def.Freshness != "":
		r := CheckResult{Kind: CheckFreshness, Expected: "lag ≤ " + durationText(def.MaxLag)}
		table, col := splitColumn(def.Freshness)
		newest, ok, err := query(fmt.Sprintf("SELECT extract(epoch FROM max(%s)::timestamptz) FROM %s", quoteIdent(col), quoteIdent(table)))
		if err != nil {
			r.Error = err.Error()
			return r
		}
		if !ok {
			r.Actual, r.Error = "no rows", fmt.Sprintf("%s has no non-null %s", table, col)
			return r
		}
		freshnessLag(&r, backup.Created, newest, def.MaxLag)
		return r
	default:
		r := CheckResult{Kind: "sql"}
		r.Expected, _ = boundsCheck(def, 0)
		v, ok, err := query(strings.TrimRight(strings.TrimSpace(def.SQL), ";"))
		if err != nil {
			r.Error = err.Error()
			return r
		}
		if !ok {
			r.Actual, r.Error = "NULL", "the query returned NULL, not a number"
			return r
		}
		r.Value, r.Actual = &v, formatNum(v)
		r.Expected, r.OK = boundsCheck(def, v)
		return r
	}
}

// boundsCheck applies min, max and equals.
func boundsCheck(def CheckSpec, v float64) (string, bool) {
	var exp []string
	ok := true
	if def.Equals != nil {
		exp = append(exp, "= "+formatNum(*def.Equals))
		ok = ok && v == *def.Equals
	}
	if def.Min != nil {
		exp = append(exp, "≥ "+formatNum(*def.Min))
		ok = ok && v >= *def.Min
	}
	if def.Max != nil {
		exp = append(exp, "≤ "+formatNum(*def.Max))
		ok = ok && v <= *def.Max
	}
	return strings.Join(exp, ", "), ok
}

var percent = regexp.MustCompile(`^(\d+(?:\.\d+)?)%$`)

// maxDrop compares a count with the same check of the previous passing drill.
func maxDrop(def CheckSpec, v float64, prev *DrillResult) (string, bool) {
	m := percent.FindStringSubmatch(def.MaxDrop)
	pct, _ := strconv.ParseFloat(m[1], 64)
	var before *float64
	if prev != nil {
		for _, c := range prev.Checks {
			if c.Name == def.Name && c.Value != nil {
				before = c.Value
			}
		}
	}
	if before == nil {
		return fmt.Sprintf("drop ≤ %s (no previous drill to compare)", def.MaxDrop), true
	}
	floor := math.Ceil(*before * (1 - pct/100))
	return fmt.Sprintf("drop ≤ %s from %s (≥ %s)", def.MaxDrop, formatNum(*before), formatNum(floor)), v >= floor
}

func joinExpect(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func formatNum(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// fkQuery lists the foreign keys of the restored schema, once per
// partitioned table rather than per partition.
const fkQuery = `
SELECT c.conname, c.conrelid::regclass::text, c.confrelid::regclass::text,
  (SELECT string_agg(quote_ident(a.attname), ',' ORDER BY k.ord)
     FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
  (SELECT string_agg(quote_ident(a.attname), ',' ORDER BY k.ord)
     FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)
FROM pg_constraint c
WHERE c.contype = 'f' AND c.conparentid = 0
ORDER BY 2, 1`

// foreignKeys re-validates every foreign key: rows whose key columns are all
// non-null (MATCH SIMPLE) and have no parent row.
func foreignKeys(ctx context.Context, db ScratchDB, timeout time.Duration) CheckResult {
	r := CheckResult{Kind: "foreign_keys", Expected: "0 violating rows"}
	rows, err := db.Rows(ctx, fkQuery, timeout)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	var total float64
	var bad []string
	for _, row := range rows {
		name, child, parent := row[0], row[1], row[2]
		ccols, pcols := strings.Split(row[3], ","), strings.Split(row[4], ",")
		var notNull, join []string
		for i := range ccols {
			notNull = append(notNull, "c."+ccols[i]+" IS NOT NULL")
			join = append(join, "p."+pcols[i]+" = c."+ccols[i])
		}
		v, _, err := db.Query(ctx, fmt.Sprintf("SELECT count(*) FROM %s c WHERE %s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)",
			child, strings.Join(notNull, " AND "), parent, strings.Join(join, " AND ")), timeout)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s on %s: %v", name, child, err))
			continue
		}
		if v > 0 {
			total += v
			bad = append(bad, fmt.Sprintf("%s on %s: %s row(s) without a parent in %s", name, child, formatNum(v), parent))
		}
	}
	r.Value = &total
	r.Actual = fmt.Sprintf("%s violating rows in %d of %d constraints", formatNum(total), len(bad), len(rows))
	r.OK = len(bad) == 0
	if len(bad) > 0 {
		r.Error = strings.Join(bad, "; ")
	}
	return r
}
