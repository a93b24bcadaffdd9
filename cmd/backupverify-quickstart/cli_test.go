package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
)

func TestHelpExitsZeroAndListsTheFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errb); err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, f := range []string{"-dir", "-listen", "-backup-schedule", "-drill-schedule", "-rows", "-duration", "-log-level", "-log-format"} {
		if !strings.Contains(out.String(), "  "+f+" ") {
			t.Errorf("--help does not list %s:\n%s", f, out.String())
		}
	}
	if errb.Len() > 0 {
		t.Errorf("--help wrote to stderr: %s", errb.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"--rowz", "5"}, &out, &errb); err == nil || !strings.Contains(errb.String(), "usage:") {
		t.Errorf("an unknown flag: %v; stderr %q", err, errb.String())
	}
}

// TestCtrlCThroughMake runs `make quickstart` in a process group of its own,
// as a terminal runs a foreground job, and sends the group SIGINT, as Ctrl-C
// does. The quick start must stop cleanly and exit 0, so that make reports no
// error (through `go run` it could not: go run exits 1 after an interrupt).
// make itself then dies of the SIGINT, as GNU make always does.
func TestCtrlCThroughMake(t *testing.T) {
	mk := testenv.LookTool(t, "make", "apt-get install make")
	dir := t.TempDir()
	port := testenv.FreePort(t)
	cmd := exec.Command(mk, "--no-print-directory", "-C", testenv.RepoRoot(t), "quickstart",
		"QUICKSTART_BIN="+filepath.Join(dir, "quickstart"),
		fmt.Sprintf("QUICKSTART_FLAGS=--dir %s --rows 100 --listen 127.0.0.1:%d --drill-schedule @yearly", filepath.Join(dir, "data"), port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	testenv.Eventually(t, "the quick start to run", 3*time.Minute, func() bool {
		return strings.Contains(out.String(), "Press Ctrl-C to stop.")
	})
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("make quickstart did not stop within 2m of SIGINT:\n%s", out.String())
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if strings.Contains(out.String(), "make: ***") || !(ws.Signaled() && ws.Signal() == syscall.SIGINT || ws.Exited() && ws.ExitStatus() == 0) {
		t.Errorf("make quickstart after Ctrl-C: %v, output:\n%s", ws, out.String())
	}
	if strings.Contains(out.String(), "\x1b[") {
		t.Error("the quick start wrote colour codes into a pipe (--log-format auto)")
	}
}
