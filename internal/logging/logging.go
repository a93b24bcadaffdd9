// Package logging builds the commands' *slog.Logger from their --log-level and
// --log-format flags, the same way for backupverify and its quick start.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
)

// Flag help texts, shared by every command that takes the flags.
const (
	LevelUsage  = "debug, info, warn or error"
	FormatUsage = "auto, text or json; auto is coloured text on a terminal, else JSON"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format: "text" (tint, coloured), "json", or "auto", which is
// text when w is a terminal and JSON otherwise (a pipe, a file, a journal).
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	if format == "auto" {
		format = "json"
		if IsTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
	}
	return nil, fmt.Errorf("--log-format %q: use auto, text or json", format)
}

// IsTerminal says whether w is a character device such as a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
