package report

import (
	"regexp"
	"strings"
	"testing"
)

// TestMarkdownEscapesHostileText: markup and links in a backup key, a check
// name or an error reach the report as text, never as HTML or a link.
func TestMarkdownEscapesHostileText(t *testing.T) {
	r := failing()
	r.Backup.Key = `x/<img src=x onerror=alert(1)>[click](https://evil.example/k).dump`
	r.Error = `restore: <script>alert(1)</script> see www.evil.example or mail ops@evil.example`
	r.Phases[len(r.Phases)-1].Error = r.Error
	r.Checks[0].Name = `[c](javascript:alert(1))`
	r.Checks[0].Error = `<iframe src="https://evil.example">`
	md := string(Markdown(Report{Name: "20251229T031800Z", Drill: r, Outcome: outcome(r)}))
	for _, bad := range []string{"<img", "<script", "<iframe", "https://evil", "www.evil", "ops@evil"} {
		if strings.Contains(md, bad) {
			t.Errorf("the report holds %q:\n%s", bad, md)
		}
	}
	// A link is [text](url): every bracket must be escaped.
	if m := regexp.MustCompile(`(^|[^\\])[\[\]]`).FindString(md); m != "" {
		t.Errorf("the report holds an unescaped bracket: %q", m)
	}
	for _, want := range []string{"&lt;img src=x onerror=alert(1)&gt;", `\[click\](https&#58;//evil.example/k)`, "&lt;script&gt;"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}
