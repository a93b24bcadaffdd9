package pgscratch

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCopyFileRefusesFIFOsAndLinks: a FIFO swapped in after the folder was
// listed is refused at once (its open does not wait for a writer), and so
// is a file with another hard link.
func TestCopyFileRefusesFIFOsAndLinks(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "linked"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "linked"), filepath.Join(t.TempDir(), "other")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(src)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for name, want := range map[string]string{"fifo": "not a regular file", "linked": "other links"} {
		done := make(chan error, 1)
		go func() { done <- copyFile(root, name, name, filepath.Join(dst, name), nil) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want an error saying %q", name, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the copy is still waiting after 5 s", name)
		}
	}
}
