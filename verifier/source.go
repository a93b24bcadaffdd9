// Package verifier is backupverify's domain: finding backups in a source,
// verifying them, drilling restores of them with their integrity checks, and
// keeping what it learnt per target. It imports neither the
// AWS SDK, nor pgx, nor Prometheus: those sit behind the small interfaces here.
package verifier

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned by a Source for a key that does not exist.
var ErrNotFound = errors.New("not found")

// Object is one entry of a source listing. Keys are relative to the source's
// root (an S3 prefix or a folder) and use / as separator.
type Object struct {
	Key  string
	Size int64
	// ETag changes whenever the content is replaced, also in place with
	// the same size and modification time; it stays while nothing changes.
	ETag         string
	LastModified time.Time
}

// Source is where a target's backups are stored. verifier/sourcetest is the
// conformance suite every implementation passes.
type Source interface {
	// List returns every object below the source's root, in any order, each
	// key once, and nothing outside the root (not a sibling prefix such as
	// db-other/ beside db/). Keys are never empty and never end in /: folders
	// and S3 folder markers are not objects. Each Object has its Size, a
	// non-empty ETag and LastModified in UTC. An empty root lists nothing,
	// without error; a root that cannot be there (a folder that does not
	// exist: an unmounted share is not an empty one) is an error. A Source
	// may leave out what it knows to be unfinished writes (filesource: dot
	// files, as rsync's temporary ones). It is one pass over the listing: no
	// per-object requests.
	// A cancelled ctx ends it with an error wrapping ctx.Err().
	List(ctx context.Context) ([]Object, error)
	// Open streams an object's content from its first byte; bodies of one
	// object opened at once read independently. It returns an error wrapping
	// ErrNotFound if the key does not exist. Reads from the returned body
	// fail, rather than block forever, when the store stalls, and fail with
	// an error wrapping context.Canceled soon after ctx is cancelled (at most
	// what the store had already sent is read after that).
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// StoredChecksum returns the sha256 the store keeps for the object, as
	// lower-case hex: S3's full-object x-amz-checksum-sha256, else the
	// x-amz-meta-sha256 metadata. It returns "" when the store keeps none,
	// and an error wrapping ErrNotFound if the key does not exist.
	StoredChecksum(ctx context.Context, key string) (string, error)
	// String describes the source for logs and reports; it holds no secret.
	String() string
}

// ArchiveReader reads a pg_dump custom-format archive end to end as a restore
// would, without restoring it anywhere.
type ArchiveReader interface {
	// ReadArchive consumes r until the archive ends. It returns an error
	// saying what is wrong when the archive cannot be read to its end.
	ReadArchive(ctx context.Context, r io.Reader) error
}

// Reason is the closed set of verification failures; it is a metric label.
type Reason string

// Verification failure reasons.
const (
	ReasonMismatch          Reason = "mismatch"
	ReasonMissingChecksum   Reason = "missing_checksum"
	ReasonUnreadableArchive Reason = "unreadable_archive"
	ReasonDownloadError     Reason = "download_error"
)

// Reasons lists every Reason, for metrics that must exist at 0.
var Reasons = []Reason{ReasonMismatch, ReasonMissingChecksum, ReasonUnreadableArchive, ReasonDownloadError}
