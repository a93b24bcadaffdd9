package pgdump

import (
	"errors"
	"fmt"
)

// The kinds of failure Read reports; test them with errors.Is.
var (
	// ErrTruncated: the archive ends before its structure says it should.
	ErrTruncated = errors.New("archive is truncated")
	// ErrCorrupt: the archive holds bytes pg_dump cannot have written
	// (an impossible value, a data block that does not inflate, a block
	// where the table of contents says none is).
	ErrCorrupt = errors.New("archive is corrupt")
	// ErrUnsupported: a format, version or compression this reader does not
	// know. The archive may be fine: read it with pg_restore instead.
	ErrUnsupported = errors.New("archive format not supported by the native reader")
)

// Error says what is wrong with an archive and where.
type Error struct {
	Kind   error // ErrTruncated, ErrCorrupt or ErrUnsupported
	Offset int64 // byte offset in the archive where the problem was found
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%v at byte %d: %s", e.Kind, e.Offset, e.Msg)
}

// Unwrap returns the kind, so errors.Is(err, ErrCorrupt) works.
func (e *Error) Unwrap() error { return e.Kind }

func errAt(kind error, off int64, format string, args ...any) *Error {
	return &Error{Kind: kind, Offset: off, Msg: fmt.Sprintf(format, args...)}
}
