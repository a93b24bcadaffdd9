package web

import (
	_ "embed"
	"html/template"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// reportName is a stored report's file name.
var reportName = regexp.MustCompile(`^\d{8}T\d{6}Z\.(md|json)$`)

// serveReports serves state_dir/reports: /reports/<target>/ lists a target's
// reports, /reports/<target>/<name>.md|.json is one. Nothing else is served.
func (s *Server) serveReports(w http.ResponseWriter, r *http.Request) {
	store := s.d.Reports()
	target, file := r.PathValue("target"), r.PathValue("file")
	if store == nil || !targetName.MatchString(target) {
		http.NotFound(w, r)
		return
	}
	dir := filepath.Join(store.Dir, target)
	if file == "" {
		ents, err := os.ReadDir(dir)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		var names []string
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), ".md"); ok && reportName.MatchString(e.Name()) {
				names = append(names, n)
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(names)))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = reportList.Execute(w, map[string]any{"Target": target, "Names": names})
		return
	}
	if !reportName.MatchString(file) {
		http.NotFound(w, r)
		return
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	ct := "text/plain; charset=utf-8" // Markdown shown as text, never as HTML
	if strings.HasSuffix(file, ".json") {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}

var targetName = regexp.MustCompile(`^[a-z0-9_-]+$`)

//go:embed templates/reports.html
var reportsHTML string

var reportList = template.Must(template.New("list").Parse(reportsHTML))
