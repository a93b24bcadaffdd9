package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds configuration files to the strict decoder and validation.
// Seeds: the files under testdata/ and the example configs.
func FuzzParse(f *testing.F) {
	f.Add([]byte("state_dir: /var/lib/backupverify\ntargets:\n  - name: crm\n    source: file:///b/\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, func(string) string { return "" })
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %v is not an *Error listing problems", err)
			}
			return
		}
		if len(c.Targets) == 0 {
			t.Fatalf("a config without targets was accepted")
		}
	})
}

// FuzzGlob compiles globs and matches keys with them. Seeds: the default
// match and the layouts in the README.
func FuzzGlob(f *testing.F) {
	f.Add(DefaultMatch, "crm/2025-12-29T0200Z/backup.dump")
	f.Add("*.sql.gz", "a/b.sql.gz")
	f.Add("latest/{a,b}?.dump", "latest/a1.dump")
	f.Fuzz(func(t *testing.T, glob, key string) {
		re, err := CompileGlob(glob)
		if err != nil {
			return
		}
		if re.MatchString(key) && !strings.ContainsAny(glob, "*?{") && key != glob {
			t.Fatalf("literal glob %q matched the different key %q", glob, key)
		}
		if !strings.ContainsAny(glob, "*?{}") && !re.MatchString(glob) {
			t.Fatalf("literal glob %q does not match itself", glob)
		}
	})
}

// Found by FuzzGlob: a non-ASCII folder name never matched.
func TestGlobNonASCII(t *testing.T) {
	re, err := CompileGlob("sauvegardes/données-*/*.dump")
	if err != nil {
		t.Fatal(err)
	}
	if key := "sauvegardes/données-2025/crm.dump"; !re.MatchString(key) {
		t.Errorf("%s does not match %s", re, key)
	}
}
