package config

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	Line int    // 1-based line in the file; 0 when the problem has no single place
	Path string // e.g. targets[1].rpo
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists every problem found in a configuration; it is never empty.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		fmt.Fprintf(&b, "%s: ", e.File)
	}
	fmt.Fprintf(&b, "%d problem(s)", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// problems collects problems and remembers where each path stood in the file,
// so that validation after decoding can still name the line.
type problems struct {
	list  []Problem
	lines map[string]int
}

func (p *problems) at(path string, line int, format string, args ...any) {
	p.list = append(p.list, Problem{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// add reports a problem at a path seen during decoding; a path that was not in
// the file (a default) is reported at its nearest written parent.
func (p *problems) add(path string, format string, args ...any) {
	line := 0
	for q := path; q != ""; q = parentPath(q) {
		if l, ok := p.lines[q]; ok {
			line = l
			break
		}
	}
	p.at(path, line, format, args...)
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func (p *problems) sorted() []Problem {
	sort.SliceStable(p.list, func(i, j int) bool {
		a, b := p.list[i], p.list[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return false
	})
	return p.list
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// expandEnv replaces ${VAR} with the variable's value, and ${VAR:-default}
// with the value, or default when VAR is unset or empty. It returns the
// names of unset variables written without a default: each is a problem,
// never an empty string in a DSN or a token. A bare $ is left alone:
// passwords and DSNs may contain one.
func expandEnv(s string, lookup func(string) (string, bool)) (string, []string) {
	var unset []string
	out := envRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := envRef.FindStringSubmatch(m)
		v, ok := lookup(sub[1])
		if def, hasDef := strings.CutPrefix(sub[2], ":-"); hasDef {
			if !ok || v == "" {
				return def
			}
			return v
		}
		if !ok {
			unset = append(unset, sub[1])
		}
		return v
	})
	return out, unset
}

// unmarshaler is implemented by field types that parse their own scalar.
type unmarshaler interface {
	parseScalar(s string) error
}

// decoder fills Go values from a yaml.Node tree strictly: unknown keys,
// duplicate keys and ill-typed values are problems with their path and line.
type decoder struct {
	p      *problems
	lookup func(string) (string, bool)
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if path != "" {
		if _, seen := d.p.lines[path]; !seen {
			d.p.lines[path] = n.Line
		}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // keep the default
	}
	if u, ok := v.Addr().Interface().(unmarshaler); ok {
		if n.Kind != yaml.ScalarNode {
			d.p.at(path, n.Line, "expected a single value, got %s", kindName(n))
			return
		}
		if err := u.parseScalar(d.expand(n, path)); err != nil {
			d.p.at(path, n.Line, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.p.at(path, n.Line, "expected a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.p.at(path, n.Line, "expected a string, got %s", kindName(n))
			return
		}
		v.SetString(d.expand(n, path))
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.p.at(path, n.Line, "expected true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int:
		i, err := strconv.Atoi(d.expand(n, path))
		if n.Kind != yaml.ScalarNode || err != nil {
			d.p.at(path, n.Line, "expected a whole number, got %q", n.Value)
			return
		}
		v.SetInt(int64(i))
	case reflect.Float64:
		f, err := strconv.ParseFloat(d.expand(n, path), 64)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.p.at(path, n.Line, "expected a number, got %q", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		panic(fmt.Sprintf("config: unsupported field kind %s at %s", v.Kind(), path))
	}
}

func (d *decoder) expand(n *yaml.Node, path string) string {
	v, unset := expandEnv(n.Value, d.lookup)
	for _, name := range unset {
		d.p.at(path, n.Line, "${%s} is not set in the environment (write ${%s:-default} to give a default)", name, name)
	}
	return v
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.p.at(path, n.Line, "expected a mapping of keys, got %s", kindName(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := k.Value
		if path != "" {
			sub = path + "." + k.Value
		}
		if first, dup := seen[k.Value]; dup {
			d.p.at(sub, k.Line, "duplicate key (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := fields[k.Value]
		if !ok {
			d.p.at(sub, k.Line, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		d.p.lines[sub] = k.Line
		d.decode(val, v.Field(idx), sub)
	}
}

func yamlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	return m
}

// suggest names a known key that differs from an unknown one by a typo.
func suggest(key string, fields map[string]int) string {
	best, bestD := "", 3
	for f := range fields {
		if d := editDistance(key, f); d < bestD || (d == bestD && f < best) {
			best, bestD = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

// Keys lists every key path the decoder accepts, as documentation writes
// them: "listen", "s3.region", "targets[].drill.jobs", "targets[].checks[].sql".
func Keys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if reflect.PointerTo(t).Implements(reflect.TypeFor[unmarshaler]()) {
			return
		}
		switch t.Kind() {
		case reflect.Slice:
			walk(t.Elem(), prefix+"[]")
		case reflect.Struct:
			fields := yamlFields(t)
			for name, i := range fields {
				path := name
				if prefix != "" {
					path = prefix + "." + name
				}
				keys = append(keys, path)
				walk(t.Field(i).Type, path)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	sort.Strings(keys)
	return keys
}
