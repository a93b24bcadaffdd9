package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/internal/testenv"
)

// readme is README.md cut into what the test reads: the lines of its fenced
// code blocks (with each block's language), and its prose paragraphs.
type readme struct {
	code       [][]string // lines of each fenced block
	lang       []string
	paragraphs []string
}

func readREADME(t *testing.T) (readme, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var r readme
	var block []string
	var para strings.Builder
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if lang, ok := strings.CutPrefix(line, "```"); ok {
			if in {
				r.code = append(r.code, block)
			} else {
				r.lang = append(r.lang, lang)
				block = nil
			}
			in = !in
			continue
		}
		switch {
		case in:
			block = append(block, line)
		case strings.TrimSpace(line) == "":
			if para.Len() > 0 {
				r.paragraphs = append(r.paragraphs, para.String())
				para.Reset()
			}
		default:
			para.WriteString(line + "\n")
		}
	}
	if para.Len() > 0 {
		r.paragraphs = append(r.paragraphs, para.String())
	}
	return r, string(b)
}

// snippets are the places the README shows commands: each code line, and
// each inline code span.
func (r readme) snippets() []string {
	var out []string
	for _, b := range r.code {
		out = append(out, b...)
	}
	span := regexp.MustCompile("`([^`]+)`")
	for _, p := range r.paragraphs {
		for _, m := range span.FindAllStringSubmatch(p, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// otherTools are flags the README names of programs other than backupverify.
var otherTools = map[string]string{
	"no-owner": "pg_restore", "no-acl": "pg_restore", "list": "pg_restore", "clean": "pg_restore", "single-transaction": "pg_restore",
	"verbose": "pg_dump", "bindir": "pg_config", "user": "docker run",
	"system": "useradd", "no-create-home": "useradd", "shell": "useradd",
}

// quickstartHelp builds the quick start and returns its --help output.
func quickstartHelp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "backupverify-quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, "../backupverify-quickstart").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--help").Output()
	if err != nil {
		t.Fatalf("backupverify-quickstart --help: %v", err)
	}
	return string(out)
}

// TestREADMEMatchesTheBinary compares every command, flag and config key the
// README names with the binary's own help and the config decoder's keys, both
// ways, so that neither can change without the other.
func TestREADMEMatchesTheBinary(t *testing.T) {
	r, text := readREADME(t)

	// Each command's help, and which flag takes which values.
	help := map[string]string{}
	flagOf := map[string]map[string]string{} // command -> flag -> its help line
	allFlags := map[string]bool{}
	for _, c := range commands {
		code, out, errOut := runCLI(t, append(strings.Fields(c.name), "--help")...)
		if code != 0 {
			t.Fatalf("%s --help: exit %d %s", c.name, code, errOut)
		}
		help[c.name] = out
		flagOf[c.name] = map[string]string{}
		for _, m := range regexp.MustCompile(`(?m)^  --([a-z][a-z.-]*) (.*)$`).FindAllStringSubmatch(out, -1) {
			flagOf[c.name][m[1]] = m[2]
			allFlags[m[1]] = true
		}
	}
	qsHelp := quickstartHelp(t)
	qsFlags := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+)\b(.*)\n((?:    .*\n)*)`).FindAllStringSubmatch(qsHelp, -1) {
		qsFlags[m[1]] = m[2] + m[3]
	}

	// Commands and their flags, where the README shows them.
	cmdRE := regexp.MustCompile(`(?:^|[\s(/])backupverify ([a-z][a-z-]*)((?: verify)?)\b(.*)`)
	flagRE := regexp.MustCompile(`--([a-z][a-z-]*(?:\.[a-z][a-z-]*)*)(?:[ =]([a-z]+(?:\|[a-z]+)+))?`) // dotted: --web.config.file
	named := map[string]bool{}
	for _, s := range r.snippets() {
		m := cmdRE.FindStringSubmatch(s)
		if m == nil || m[1] == "is" {
			continue
		}
		name := m[1]
		if name == "reports" {
			name += m[2]
		}
		if _, ok := flagOf[name]; !ok {
			t.Errorf("the README shows `backupverify %s`, which is no command of the binary: %q", name, s)
			continue
		}
		named[name] = true
		for _, f := range flagRE.FindAllStringSubmatch(m[3], -1) {
			line, ok := flagOf[name][f[1]]
			if !ok && f[1] != "help" && f[1] != "version" {
				t.Errorf("the README gives `backupverify %s` the flag --%s, which its --help does not list: %q", name, f[1], s)
			}
			for _, v := range strings.Split(f[2], "|") {
				if v != "" && !strings.Contains(line, v) {
					t.Errorf("the README gives --%s of %s the value %q, which its --help does not name (%s)", f[1], name, v, line)
				}
			}
		}
	}
	for _, c := range commands {
		if !named[c.name] {
			t.Errorf("the README never shows the command `backupverify %s`", c.name)
		}
	}

	// Every flag the README names is a flag of backupverify, of the quick
	// start (in a paragraph about it), or of a program it names.
	mentioned := map[string]bool{}
	for _, p := range append(r.paragraphs, strings.Join(r.snippets(), "\n")) {
		for _, f := range flagRE.FindAllStringSubmatch(p, -1) {
			mentioned[f[1]] = true
			_, qs := qsFlags[f[1]]
			switch {
			case strings.Contains(p, "quickstart") && qs:
			case allFlags[f[1]], f[1] == "help", f[1] == "version":
			case otherTools[f[1]] != "":
			default:
				t.Errorf("the README names --%s, which neither backupverify nor the quick start takes", f[1])
			}
		}
	}
	for f := range allFlags {
		if !mentioned[f] {
			t.Errorf("the README never names backupverify's flag --%s", f)
		}
	}
	for f := range qsFlags {
		if !mentioned[f] {
			t.Errorf("the README never names the quick start's flag --%s", f)
		}
	}
	// The quick start's drill schedule, as the README tells it.
	if m := regexp.MustCompile(`(?m)^  -drill-schedule string\n.*\(default "([^"]+)"\)`).FindStringSubmatch(qsHelp); m == nil ||
		!strings.Contains(text, "`"+m[1]+"`") {
		t.Errorf("the README does not give the quick start's drill schedule as its --help does:\n%s", qsHelp)
	}

	// The Go version is go.mod's.
	gomod, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVer := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if !strings.Contains(text, fmt.Sprintf("Go %s or newer", goVer[1])) {
		t.Errorf("the README does not ask for Go %s or newer, as go.mod does", goVer[1])
	}
	if strings.Contains(text, "next release") {
		t.Error(`the README still promises something for "the next release"`)
	}

	// Config keys: those of the README's YAML examples and of its key table
	// are the decoder's, and every key the decoder takes is documented.
	keys := config.Keys()
	documented := map[string]bool{}
	for i, b := range r.code {
		if r.lang[i] != "yaml" || len(b) > 0 && strings.HasPrefix(b[0], "scrape_configs:") {
			continue // not YAML, or Prometheus's scrape config
		}
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(strings.Join(b, "\n")), &doc); err != nil {
			t.Errorf("a YAML example of the README does not parse: %v", err)
			continue
		}
		paths := yamlPaths(doc.Content[0], "")
		// A fragment (a target's checks) sits in a target.
		prefix := ""
		if len(paths) > 0 && !slices.Contains(keys, paths[0]) && slices.Contains(keys, "targets[]."+paths[0]) {
			prefix = "targets[]."
		}
		for _, p := range paths {
			documented[prefix+p] = true
			if !slices.Contains(keys, prefix+p) {
				t.Errorf("the README's YAML example has the key %s, which the config does not know", prefix+p)
			}
		}
	}
	_, table, ok := strings.Cut(text, "\n| key | default | notes |\n")
	if !ok {
		t.Fatal("the README has no key table (| key | default | notes |)")
	}
	if i := strings.Index(table, "\n\n"); i >= 0 {
		table = table[:i]
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)` \\|").FindAllStringSubmatch(table, -1) {
		documented[m[1]] = true
		if !slices.Contains(keys, m[1]) {
			t.Errorf("the README's key table has %s, which the config does not know", m[1])
		}
	}
	for _, k := range keys {
		if !documented[k] {
			t.Errorf("the config key %s is in neither the README's YAML examples nor its key table", k)
		}
	}
}

// yamlPaths lists the key paths of a YAML mapping, "[]" marking a list.
func yamlPaths(n *yaml.Node, prefix string) []string {
	var out []string
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if prefix != "" {
				p = prefix + "." + p
			}
			out = append(out, p)
			out = append(out, yamlPaths(n.Content[i+1], p)...)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			out = append(out, yamlPaths(c, prefix+"[]")...)
		}
	}
	return out
}
