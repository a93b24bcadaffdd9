package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRowsChangeStartsDrillHistoryAfresh: a re-run with the same --rows keeps
// the drill history (max_drop compares with it); a different --rows, or a
// last run whose --rows is unknown, removes it and says so.
func TestRowsChangeStartsDrillHistoryAfresh(t *testing.T) {
	dir := t.TempDir()
	drills := filepath.Join(dir, "state", "targets", "crm", "drill.json")
	if err := os.MkdirAll(filepath.Dir(drills), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	step := func(rows int, wantKept bool) {
		t.Helper()
		if err := os.WriteFile(drills, []byte(`{"last_ok":{}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		logs.Reset()
		if err := freshDrillsOnRowsChange(dir, rows, log); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(drills)
		if kept := err == nil; kept != wantKept {
			t.Fatalf("rows %d: drill.json kept %v, want %v; logs: %s", rows, kept, wantKept, logs.String())
		}
		if said := strings.Contains(logs.String(), "drill history starts afresh"); said == wantKept {
			t.Fatalf("rows %d: logged %q", rows, logs.String())
		}
	}
	step(500, false) // the last run's rows unknown
	step(500, true)
	step(500, true)
	step(400, false)
	if !strings.Contains(logs.String(), "previous_rows=500") {
		t.Errorf("the log does not name the previous rows: %s", logs.String())
	}
	step(400, true)
	if err := os.Remove(drills); err != nil {
		t.Fatal(err)
	}
	if err := freshDrillsOnRowsChange(dir, 300, log); err != nil {
		t.Fatalf("no drill history yet: %v", err)
	}
}
