package config

import (
	"strings"
	"testing"
)

// TestScratchSafetyChecks: a scratch DSN whose query could change who a
// drill connects as or where, target names that scratch names cannot tell
// apart, and a relative scratch_dir are refused, each naming its line.
func TestScratchSafetyChecks(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"user and dbname in the query", `targets:
  - name: crm
    source: file:///b/
    drill:
      scratch: postgres://verifier:pw@db/postgres?user=postgres&dbname=crm_prod
`, "line 5: targets[0].drill.scratch: query parameter(s) dbname, user not allowed"},
		{"service", `targets:
  - name: crm
    source: file:///b/
    drill: {scratch: "postgres://verifier@db/postgres?service=prod"}
`, "line 4: targets[0].drill.scratch: query parameter(s) service not allowed"},
		{"options, passfile, password", `targets:
  - name: crm
    source: file:///b/
    drill: {scratch: "postgres://verifier@db/postgres?options=-crole%3Dpostgres&passfile=/x&password=y"}
`, "query parameter(s) options, passfile, password not allowed"},
		{"no admin user", `targets:
  - name: crm
    source: file:///b/
    drill: {scratch: "postgres://db/postgres"}
`, "names no admin user"},
		{"a-b and a_b", `targets:
  - name: a_b
    source: file:///b/
  - name: a-b
    source: file:///b/
`, `line 4: targets[1].name: "a-b" and targets[0]'s "a_b" differ only in - and _`},
		{"relative scratch_dir", `drills: {scratch_dir: scratch}
targets:
  - name: crm
    source: file:///b/
`, `line 1: drills.scratch_dir: "scratch" must be an absolute path`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), env(nil))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant %q", err, c.want)
			}
			if strings.Contains(err.Error(), "pw@") || strings.Contains(err.Error(), "crm_prod") {
				t.Errorf("the error echoes the DSN: %v", err)
			}
		})
	}
	ok := `drills: {scratch_dir: /var/tmp/bv, scratch_user: bv-scratch}
targets:
  - name: crm
    source: file:///b/
    drill: {scratch: "postgres://verifier:pw@db:6432/postgres?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5"}
  - name: crm-2
    source: file:///b/
    drill: {scratch: "postgres://verifier@/postgres?host=/run/postgresql&port=5433"}
`
	c, err := Parse([]byte(ok), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Drills.ScratchDir != "/var/tmp/bv" || c.Drills.ScratchUser != "bv-scratch" {
		t.Errorf("drills %+v", c.Drills)
	}
}
