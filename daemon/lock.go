package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrStateDirBusy is returned by LockStateDir while another process holds it.
var ErrStateDirBusy = errors.New("state_dir is in use")

// LockStateDir takes an exclusive flock on state_dir/.lock, so that one
// process at a time (run, drill or verify) writes state, drill.json and the
// report chain. The lock goes with the process, however it ends; release
// drops it earlier. The holder's PID is written into the file so that a
// second process can say who holds it.
func LockStateDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf("another backupverify process (pid %d)", pid)
			}
			return nil, fmt.Errorf("%w: %s holds %s; one run, drill or verify at a time per state_dir", ErrStateDirBusy, holder, path)
		}
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
