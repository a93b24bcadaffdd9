package verifier

import (
	"fmt"
	"regexp"
	"time"
)

// Target is one database whose backups are watched and drilled, as the
// domain sees it: daemon/targets.go builds it from the configuration.
type Target struct {
	Name string
	// Glob is the pattern Match was compiled from, for messages.
	Glob string
	// Match selects backup keys below the source.
	Match *regexp.Regexp
	// Checksum is where a backup's expected sha256 is found: one of the
	// Checksum modes.
	Checksum string
	// Manifest is the file name of a folder's CHECKSUM manifest.
	Manifest string
	// ArchiveTZ is the zone a custom-format header's zone-less time is
	// read in (archive_timezone); nil is UTC.
	ArchiveTZ *time.Location
	// BackupSchedule is the cron spec backups are expected on; "" for none.
	BackupSchedule string
	// BackupGrace is how long a backup may take to be written completely.
	BackupGrace time.Duration
	// Poll is the time between listings.
	Poll time.Duration
	// VerifyLast is how many of the newest backups a first scan verifies.
	VerifyLast int
	RPO        time.Duration
	RTO        time.Duration
	Verify     VerifySpec
	Drill      DrillSpec
	Checks     []CheckSpec
}

// VerifySpec bounds one verification of a backup.
type VerifySpec struct {
	// Timeout bounds a verification, download and full read; 0: none.
	Timeout time.Duration
	// MaxPlainBytes bounds a plain dump's decompressed size; 0: none.
	MaxPlainBytes int64
	// PgRestoreOnly reads custom-format archives with pg_restore even
	// where the native reader knows the format.
	PgRestoreOnly bool
}

// DrillSpec says how a target's restore drill runs.
type DrillSpec struct {
	Timeout     time.Duration
	Jobs        int
	AllowErrors []string
}

// CheckSpec is one integrity check run against a restored database. Exactly
// one of Count, Orphans, ForeignKeys, Freshness or SQL says its kind.
type CheckSpec struct {
	Name        string
	Count       string // table
	Orphans     string // child.column -> parent.column
	ForeignKeys bool
	Freshness   string // table.column
	SQL         string
	Min         *float64
	Max         *float64
	Equals      *float64
	MaxDrop     string // a percentage, "5%"
	MaxLag      time.Duration
	Timeout     time.Duration
}

// Checksum modes.
const (
	ChecksumAuto     = "auto"
	ChecksumManifest = "manifest"
	ChecksumSidecar  = "sidecar"
	ChecksumS3       = "s3"
	ChecksumNone     = "none"
)

// durationText writes a duration as the configuration does: 90s, 15m,
// 1h30m, 30d (years and weeks only when exact), 0s for zero.
func durationText(d time.Duration) string {
	ms := int64(d / time.Millisecond)
	if ms == 0 {
		return "0s"
	}
	sign, out := "", ""
	if ms < 0 {
		sign, ms = "-", -ms
	}
	unit := func(name string, mult int64, exact bool) {
		if exact && ms%mult != 0 {
			return
		}
		if v := ms / mult; v > 0 {
			out += fmt.Sprintf("%d%s", v, name)
			ms -= v * mult
		}
	}
	const day = 1000 * 60 * 60 * 24
	unit("y", 365*day, true)
	unit("w", 7*day, true)
	unit("d", day, false)
	unit("h", 1000*60*60, false)
	unit("m", 1000*60, false)
	unit("s", 1000, false)
	unit("ms", 1, false)
	return sign + out
}
