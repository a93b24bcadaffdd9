package config

import (
	"fmt"
	"regexp"
	"strings"
)

// CompileGlob turns a glob into a regexp over slash-separated keys:
// ** matches across folders, * and ? within one, {a,b} either alternative.
func CompileGlob(glob string) (*regexp.Regexp, error) {
	if glob == "" {
		return nil, fmt.Errorf("must not be empty")
	}
	var b strings.Builder
	b.WriteString("^")
	depth := 0
	for i := 0; i < len(glob); i++ {
		c := glob[i]
		switch {
		case c == '*' && i+1 < len(glob) && glob[i+1] == '*':
			i++
			if i+1 < len(glob) && glob[i+1] == '/' {
				i++
				b.WriteString("(?:.*/)?")
			} else {
				b.WriteString(".*")
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '{':
			depth++
			b.WriteString("(?:")
		case c == '}' && depth > 0:
			depth--
			b.WriteString(")")
		case c == ',' && depth > 0:
			b.WriteString("|")
		default:
			// glob[i:i+1], not string(c): a byte of a multi-byte
			// character must stay that byte, not become the rune c.
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("glob %q has an unclosed {", glob)
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
