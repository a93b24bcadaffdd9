package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/backupverify/backupverify/daemon"
)

// TestOneWriterPerStateDir: while a process holds state_dir, run, drill and
// verify refuse to start and name the holder.
func TestOneWriterPerStateDir(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	os.MkdirAll(filepath.Join(dir, "src"), 0o755)
	cfg := filepath.Join(dir, "c.yml")
	writeFile(t, cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nstate_dir: %s\ntargets:\n  - {name: crm, source: \"file://%s/src/\"}\n", state, dir)))
	release, err := daemon.LockStateDir(state)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, cmd := range []string{"run", "drill", "verify"} {
		code, _, errOut := runCLI(t, cmd, "--config", cfg, "--log-format", "json")
		if code != 1 || !strings.Contains(errOut, fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(errOut, "state_dir is in use") {
			t.Errorf("%s while state_dir is held: exit %d, stderr %s", cmd, code, errOut)
		}
	}
}
