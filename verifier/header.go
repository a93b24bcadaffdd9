package verifier

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"
)

// Archive formats.
const (
	FormatCustom  = "custom"
	FormatSQL     = "sql"
	FormatSQLGzip = "sql.gz"
)

// ArchiveInfo is what an archive's header says about it.
type ArchiveInfo struct {
	Format        string    `json:"format"`
	Created       time.Time `json:"created,omitzero"` // zero when the header does not say
	Database      string    `json:"database,omitempty"`
	DumpVersion   string    `json:"pg_dump_version,omitempty"`
	ServerVersion string    `json:"server_version,omitempty"`
	ArchiveVer    string    `json:"archive_version,omitempty"`
	// localTime: Created is a zone-less local time, not yet read in a zone.
	localTime bool
}

var errShortHeader = errors.New("archive header is truncated")

// parseCustomHeader reads the header pg_dump writes at the start of a custom
// archive (pg_backup_archiver.c WriteHead/ReadHead). The creation time is
// written as the dumping host's local broken-down time without a zone; it is
// returned as if in UTC, and InZone reads it in the target's
// archive_timezone.
func parseCustomHeader(b []byte) (ArchiveInfo, error) {
	info := ArchiveInfo{Format: FormatCustom}
	if len(b) < 11 || string(b[:5]) != "PGDMP" {
		return info, errors.New("not a pg_dump custom archive (no PGDMP magic)")
	}
	vmaj, vmin, vrev := int(b[5]), int(b[6]), int(b[7])
	info.ArchiveVer = fmt.Sprintf("%d.%d-%d", vmaj, vmin, vrev)
	intSize, fmtByte := int(b[8]), b[10]
	if vmaj != 1 || vmin < 10 {
		return info, fmt.Errorf("archive version %s is too old to read its header", info.ArchiveVer)
	}
	if intSize < 1 || intSize > 8 {
		return info, fmt.Errorf("archive header has an impossible integer size %d", intSize)
	}
	if fmtByte != 1 {
		return info, fmt.Errorf("archive format %d is not custom (1)", fmtByte)
	}
	pos := 11
	readInt := func() (int, error) {
		if pos < 0 || 1+intSize > len(b)-pos {
			return 0, errShortHeader
		}
		neg := b[pos] != 0
		var buf [8]byte
		copy(buf[:], b[pos+1:pos+1+intSize])
		u := binary.LittleEndian.Uint64(buf[:])
		pos += 1 + intSize
		// No length or date field of a real header comes near 2^31: a bigger
		// value is a hostile or broken archive, not a number to compute with.
		if u > math.MaxInt32 {
			return 0, fmt.Errorf("archive header holds an impossible integer %d", u)
		}
		v := int(u)
		if neg {
			v = -v
		}
		return v, nil
	}
	readStr := func() (string, error) {
		n, err := readInt()
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "", nil
		}
		if n > len(b)-pos {
			return "", errShortHeader
		}
		s := string(b[pos : pos+n])
		pos += n
		return s, nil
	}
	if vmin >= 15 {
		pos++ // compression algorithm, one byte; readInt checks what follows
	} else if _, err := readInt(); err != nil { // compression level
		return info, err
	}
	var tm [7]int // sec, min, hour, mday, mon, year, isdst
	for i := range tm {
		v, err := readInt()
		if err != nil {
			return info, err
		}
		tm[i] = v
	}
	var err error
	if info.Database, err = readStr(); err != nil {
		return info, err
	}
	if info.ServerVersion, err = readStr(); err != nil {
		return info, err
	}
	if info.DumpVersion, err = readStr(); err != nil {
		return info, err
	}
	info.Created = time.Date(tm[5]+1900, time.Month(tm[4]+1), tm[3], tm[2], tm[1], tm[0], 0, time.UTC)
	info.localTime = true
	return info, nil
}

// InZone reads a custom-format header's zone-less time in loc (nil: UTC).
// Times that carry their zone (plain dumps) are left as they are.
func (a ArchiveInfo) InZone(loc *time.Location) ArchiveInfo {
	if !a.localTime || loc == nil || a.Created.IsZero() {
		return a
	}
	c := a.Created
	a.Created = time.Date(c.Year(), c.Month(), c.Day(), c.Hour(), c.Minute(), c.Second(), 0, loc).UTC()
	a.localTime = false
	return a
}

var (
	sqlDumpedBy   = regexp.MustCompile(`(?m)^-- Dumped by pg_dump version (\S+)`)
	sqlDumpedFrom = regexp.MustCompile(`(?m)^-- Dumped from database version (\S+)`)
	sqlStarted    = regexp.MustCompile(`(?m)^-- Started on (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\S+)`)
)

// parseSQLHeader reads the comment block at the start of a plain-format dump.
func parseSQLHeader(head []byte) ArchiveInfo {
	info := ArchiveInfo{Format: FormatSQL}
	if m := sqlDumpedBy.FindSubmatch(head); m != nil {
		info.DumpVersion = string(m[1])
	}
	if m := sqlDumpedFrom.FindSubmatch(head); m != nil {
		info.ServerVersion = string(m[1])
	}
	if m := sqlStarted.FindSubmatch(head); m != nil && string(m[2]) == "UTC" {
		if t, err := time.Parse("2006-01-02 15:04:05", string(m[1])); err == nil {
			info.Created = t
		}
	}
	return info
}

// sqlDumpFooter is the last comment pg_dump writes to a plain-format dump;
// a dump without it was cut short.
const sqlDumpFooter = "-- PostgreSQL database dump complete"

// tailWriter keeps the last bytes written to it.
type tailWriter struct {
	buf []byte
	max int
}

func (w *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= w.max {
		p = p[len(p)-w.max:]
		w.buf = append(w.buf[:0], p...)
		return n, nil
	}
	if over := len(w.buf) + len(p) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	w.buf = append(w.buf, p...)
	return n, nil
}

func (w *tailWriter) complete() bool {
	return bytes.Contains(w.buf, []byte(sqlDumpFooter))
}

// peek returns up to n bytes without consuming them.
func peek(br *bufio.Reader, n int) []byte {
	b, _ := br.Peek(n)
	return b
}
