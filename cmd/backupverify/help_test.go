package main

import (
	"regexp"
	"sort"
	"strings"
	"testing"
)

// helpFlags are the flags a help text lists, in its "flags:" section.
func helpFlags(help string) []string {
	_, section, _ := strings.Cut(help, "\nflags:\n")
	var fl []string
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z][a-z.-]*)`).FindAllStringSubmatch(section, -1) {
		fl = append(fl, m[1])
	}
	sort.Strings(fl)
	return fl
}

func TestEveryCommandsHelpListsItsOwnFlagsAndExitsZero(t *testing.T) {
	want := map[string][]string{
		"run":            {"config", "log-format", "log-level", "web.config.file"},
		"verify":         {"config", "log-format", "log-level", "target"},
		"drill":          {"config", "format", "log-format", "log-level", "target"},
		"reports verify": {"config", "log-format", "log-level", "target"},
		"check-config":   {"config", "log-format", "log-level"},
		"version":        {"log-format", "log-level"},
	}
	if len(want) != len(commands) {
		t.Fatalf("%d commands, the test knows %d", len(commands), len(want))
	}
	for name, flags := range want {
		for _, h := range []string{"--help", "-h"} {
			args := append(strings.Fields(name), h)
			code, out, errOut := runCLI(t, args...)
			if code != 0 || errOut != "" {
				t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
			}
			if !strings.HasPrefix(out, "usage: backupverify "+name) {
				t.Errorf("%v: %q", args, out)
			}
			if got := helpFlags(out); strings.Join(got, " ") != strings.Join(flags, " ") {
				t.Errorf("%v lists flags %v, want %v", args, got, flags)
			}
		}
		code, out, _ := runCLI(t, append([]string{"help"}, strings.Fields(name)...)...)
		if code != 0 || strings.Join(helpFlags(out), " ") != strings.Join(flags, " ") {
			t.Errorf("help %s: exit %d\n%s", name, code, out)
		}
	}
	// A flag of another command is refused, naming it.
	if code, _, errOut := runCLI(t, "run", "--config", "x.yml", "--target", "a"); code != 2 || !strings.Contains(errOut, "-target") {
		t.Errorf("run --target: exit %d, stderr %q", code, errOut)
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, _ := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "reports verify") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
	code, out, errOut := runCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "backupverify ") || !strings.Contains(out, "go1.") {
		t.Errorf("--version: exit %d, %q %q", code, out, errOut)
	}
}
