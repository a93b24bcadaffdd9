package web

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/backupverify/backupverify/scheduler"
	"github.com/backupverify/backupverify/verifier"
)

// serveTriggerDrill starts a drill now. Without a configured trigger token the
// API is read-only (404); with one, the request must carry it as a bearer
// token (compared in constant time). Failed attempts are rate-limited per
// client: 5 at once, then one a minute (429 past that).
func (s *Server) serveTriggerDrill(w http.ResponseWriter, r *http.Request) {
	token := s.d.TriggerToken()
	if token == "" {
		http.NotFound(w, r)
		return
	}
	client := clientOf(r)
	if ok, wait := s.auth.allow(client); !ok {
		w.Header().Set("Retry-After", retryAfter(wait))
		http.Error(w, "too many failed authentications; try again later", http.StatusTooManyRequests)
		return
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		s.auth.failed(client)
		s.log.Warn("drill trigger refused: no valid token", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="backupverify"`)
		http.Error(w, "a valid trigger token is required", http.StatusUnauthorized)
		return
	}
	name := r.PathValue("name")
	err := s.d.RunDrill(name, verifier.TriggerAPI)
	switch {
	case errors.Is(err, scheduler.ErrUnknown):
		http.Error(w, "no such target", http.StatusNotFound)
	case errors.Is(err, scheduler.ErrRunning):
		http.Error(w, "a drill of this target is already running or queued", http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		s.log.Info("drill triggered over the API", "target", name, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]string{"target": name, "status": "started"})
	}
}
