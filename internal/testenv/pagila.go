package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// module is the main module's path, which identifies the repository root.
const module = "github.com/backupverify/backupverify"

// RepoRoot is the folder of the main module's go.mod, found by walking up from
// the test's working folder (its package folder).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.TrimSpace(line) == "module "+module {
					return d
				}
			}
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	t.Fatalf("the go.mod of %s is not above %s", module, dir)
	return ""
}

// PagilaDir is the Pagila sample database vendored in testdata/pagila at the
// repository root (schema, data, licence).
func PagilaDir(t testing.TB) string {
	t.Helper()
	p := filepath.Join(RepoRoot(t), "testdata", "pagila")
	if _, err := os.Stat(filepath.Join(p, "pagila-schema.sql")); err != nil {
		t.Fatalf("the vendored Pagila data set is missing: %v", err)
	}
	return p
}
