package verifier

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/verifier/pgdump"
)

// tinyDump is a real pg_dump 15 custom archive (a table and a large object)
// from the native reader's fuzz corpus.
func tinyDump(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("pgdump/testdata/fuzz/FuzzRead/tiny-default")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(b), "\n")
	body = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(body), "[]byte("), ")")
	s, err := strconv.Unquote(body)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// oneDump is a source holding body as db.dump, its S3 checksum right, and
// that backup.
func oneDump(body []byte, t0 time.Time) (*memSource, Backup) {
	src := &memSource{objs: map[string][]byte{"db.dump": body}, mod: map[string]time.Time{"db.dump": t0},
		sums: map[string]string{"db.dump": hexsum(body)}}
	return src, Backup{Object: Object{Key: "db.dump", Size: int64(len(body)), LastModified: t0}, ChecksumKind: ChecksumS3}
}

// countingArchive stands for pg_restore: it consumes the archive and counts calls.
type countingArchive struct{ calls int }

func (c *countingArchive) ReadArchive(_ context.Context, r io.Reader) error {
	c.calls++
	_, err := io.Copy(io.Discard, r)
	return err
}

// TestVerifyCustomReader: custom-format archives are read natively, damage
// included, and pg_restore reads only those whose header the native reader
// does not know, or all of them with verify.reader: pg_restore; the Result
// says which one ran.
func TestVerifyCustomReader(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return t0 }
	good := tinyDump(t)
	newer := bytes.Clone(good)
	newer[6] = 17 // archive version 1.17
	flipped := bytes.Clone(good)
	flipped[len(flipped)-30] ^= 0xff // inside the large object's zlib stream
	for _, c := range []struct {
		name       string
		body       []byte
		wantReason Reason
		wantReader string
		wantCalls  int
		pgRestore  bool // targets[].verify.reader: pg_restore
	}{
		{"good", good, "", ReaderNative, 0, false},
		{"cut short", good[:len(good)-100], ReasonUnreadableArchive, ReaderNative, 0, false},
		{"flipped byte", flipped, ReasonUnreadableArchive, ReaderNative, 0, false},
		{"unknown archive version", newer, "", ReaderPgRestore, 1, false},
		{"reader: pg_restore", good, "", ReaderPgRestore, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, b := oneDump(c.body, t0)
			ar := &countingArchive{}
			r, err := VerifyTo(context.Background(), src, ar, b, nil, now, CopyOptions{Limits: VerifySpec{PgRestoreOnly: c.pgRestore}})
			if err != nil {
				t.Fatal(err)
			}
			if r.Reason != c.wantReason || r.OK != (c.wantReason == "") {
				t.Fatalf("reason %q ok %v (%s), want %q", r.Reason, r.OK, r.Error, c.wantReason)
			}
			if r.Reader != c.wantReader || ar.calls != c.wantCalls {
				t.Errorf("reader %q, pg_restore called %d times; want %q, %d", r.Reader, ar.calls, c.wantReader, c.wantCalls)
			}
			if r.BytesRead != int64(len(c.body)) || r.SHA256 != hexsum(c.body) {
				t.Errorf("read %d bytes, sha256 %s; want every byte hashed", r.BytesRead, r.SHA256)
			}
			if c.wantReader == ReaderNative && (r.Archive.Format != FormatCustom || r.Archive.Database != "tiny" ||
				!strings.HasPrefix(r.Archive.DumpVersion, "15.") || r.Archive.ArchiveVer != "1.14-0") {
				t.Errorf("archive info %+v", r.Archive)
			}
		})
	}
}

// spillFailingArchive stands for an archive reader whose own temporary file
// failed part-way: no verdict on the backup.
type spillFailingArchive struct{}

func (spillFailingArchive) ReadArchive(_ context.Context, r io.Reader) error {
	_, _ = io.CopyN(io.Discard, r, 100)
	return fmt.Errorf("%w: the 4096 bytes read back at 0 are not those written", pgdump.ErrSpill)
}

// TestVerifySpillFailureIsNoVerdict: a failure of the reader's spill file is
// download_error, which the watch loop retries, never unreadable_archive,
// which would call a good backup broken; the rest of the backup is still
// read and hashed.
func TestVerifySpillFailureIsNoVerdict(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	body := tinyDump(t)
	src, b := oneDump(body, t0)
	r, err := VerifyTo(context.Background(), src, spillFailingArchive{}, b, nil, func() time.Time { return t0 },
		CopyOptions{Limits: VerifySpec{PgRestoreOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || r.Reason != ReasonDownloadError || !strings.Contains(r.Error, "spill file") {
		t.Errorf("ok %v, reason %q (%s); want download_error naming the spill file", r.OK, r.Reason, r.Error)
	}
	if r.SHA256 != hexsum(body) || r.BytesRead != int64(len(body)) {
		t.Errorf("read %d bytes, sha256 %s; want all %d hashed", r.BytesRead, r.SHA256, len(body))
	}
}
