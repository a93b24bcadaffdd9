package pgscratch

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The testdata/pg_restore files are pg_restore's stderr, verbatim, from
// real runs (scripts/capture-pg-restore-stderr.sh): a role without superuser
// restoring pg_stat_statements, and a dump restored twice into one database.

func readStderr(t *testing.T, name string) restoreOutput {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "pg_restore", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return parseRestoreOutput(f)
}

func TestParseRestoreOutput(t *testing.T) {
	tests := []struct {
		file     string
		entries  []tocEntry
		ignored  int
		parallel int
	}{
		{"extension-pg15.stderr", []tocEntry{
			{kind: "EXTENSION", name: "pg_stat_statements"},
			{kind: "COMMENT", name: "EXTENSION pg_stat_statements"},
		}, 2, 0},
		{"restored-twice-pg15.stderr", []tocEntry{
			{kind: "EXTENSION", name: "pg_stat_statements"},
			{kind: "COMMENT", name: "EXTENSION pg_stat_statements"},
			{kind: "TABLE", name: "users", owner: "postgres"},
			{kind: "TABLE DATA", name: "users", owner: "postgres"},
			{kind: "CONSTRAINT", name: "users users_email_key", owner: "postgres"},
			{kind: "CONSTRAINT", name: "users users_pkey", owner: "postgres"},
		}, 6, 0},
		{"restored-twice-jobs2-pg15.stderr", []tocEntry{
			{kind: "EXTENSION", name: "pg_stat_statements"},
			{kind: "COMMENT", name: "EXTENSION pg_stat_statements"},
			{kind: "TABLE", name: "users", owner: "postgres"},
			{kind: "TABLE DATA", name: "users", owner: "postgres"},
			{kind: "CONSTRAINT", name: "users users_email_key", owner: "postgres"},
			{kind: "CONSTRAINT", name: "users users_pkey", owner: "postgres"},
		}, 9, 3},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			out := readStderr(t, tt.file)
			var got []tocEntry
			for _, e := range out.errors {
				if e.entry == nil {
					t.Fatalf("error %q tied to no TOC entry", e.msg)
				}
				got = append(got, *e.entry)
				if strings.Contains(e.String(), "alice@example.com") || strings.Contains(e.String(), "Command was") {
					t.Errorf("row data or SQL left the parser: %q", e.String())
				}
			}
			if !reflect.DeepEqual(got, tt.entries) {
				t.Errorf("entries\n got %+v\nwant %+v", got, tt.entries)
			}
			if out.ignored != tt.ignored || out.parallelErrors != tt.parallel {
				t.Errorf("errors ignored %d, in the parallel loop %d; want %d, %d", out.ignored, out.parallelErrors, tt.ignored, tt.parallel)
			}
		})
	}
}

// TestJudgeRestore: SPEC's own allow_errors example passes a restore whose
// only errors are pg_stat_statements' (its COMMENT included); anything else,
// a count that disagrees, or a pg_restore killed by a signal fails it.
func TestJudgeRestore(t *testing.T) {
	exitErr := exec.Command("sh", "-c", "exit 1").Run()
	killed := exec.Command("sh", "-c", "kill -9 $$").Run()
	ext := readStderr(t, "extension-pg15.stderr")
	twice := readStderr(t, "restored-twice-jobs2-pg15.stderr")
	undercount := ext
	undercount.ignored = 1
	overcount := ext
	overcount.ignored = 3
	noSummary := ext
	noSummary.ignored = -1
	spec := []string{"EXTENSION pg_stat_statements"}
	tests := []struct {
		name    string
		out     restoreOutput
		wait    error
		allow   []string
		wantErr string // "" passes
		ignored int
	}{
		{"SPEC example allows the extension and its comment", ext, exitErr, spec, "", 2},
		{"nothing allowed", ext, exitErr, nil, "2 error(s) not allowed", 0},
		{"kind alone", ext, exitErr, []string{"EXTENSION"}, "", 2},
		{"the comment alone", ext, exitErr, []string{"COMMENT EXTENSION pg_stat_statements"}, "1 error(s) not allowed", 1},
		{"another extension", ext, exitErr, []string{"EXTENSION postgis"}, "2 error(s) not allowed", 0},
		{"killed by a signal after allowed errors", ext, killed, spec, "killed by signal", 2},
		{"pg_restore counts fewer", undercount, exitErr, spec, "says it ignored 1 error(s) but 2", 2},
		{"pg_restore counts more", overcount, exitErr, spec, "says it ignored 3 error(s) but 2", 2},
		{"no count printed", noSummary, exitErr, spec, "no count of errors ignored", 2},
		{"parallel double count is consistent", twice, exitErr,
			[]string{"EXTENSION pg_stat_statements", "TABLE users", "TABLE DATA users", "CONSTRAINT users"}, "", 6},
		{"a table's data is not its table", twice, exitErr,
			[]string{"EXTENSION pg_stat_statements", "TABLE users", "CONSTRAINT users"}, "TABLE DATA users: COPY failed", 5},
		{"exit status without errors", restoreOutput{ignored: -1}, exitErr, nil, "exit status 1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ign, err := judgeRestore(tt.out, tt.wait, "", tt.allow)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("want a pass, got %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
			if len(ign) != tt.ignored {
				t.Errorf("%d errors accepted, want %d: %q", len(ign), tt.ignored, ign)
			}
			for _, s := range ign {
				if strings.Contains(s, "alice@example.com") {
					t.Errorf("row data in an accepted error: %q", s)
				}
			}
			if err != nil && strings.Contains(err.Error(), "alice@example.com") {
				t.Errorf("row data in the failure: %v", err)
			}
		})
	}
	var ee *exec.ExitError
	if !errors.As(killed, &ee) {
		t.Fatalf("sh killed by SIGKILL: %v", killed)
	}
}
