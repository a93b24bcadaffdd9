package verifier

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

// customHeader builds the header of a custom archive, format 1.14, with
// integers of intSize bytes, as pg_dump's WriteHead does; strLen overrides the
// length written before the database name when not 0.
func customHeader(intSize int, strLen uint64) []byte {
	b := []byte("PGDMP")
	b = append(b, 1, 14, 0, byte(intSize), 8, 1)
	putInt := func(v uint64) {
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], v)
		b = append(b, 0)
		b = append(b, buf[:intSize]...)
	}
	putInt(0) // compression level
	for _, v := range []uint64{7, 0, 2, 29, 11, 125, 0} {
		putInt(v)
	}
	for _, s := range []string{"crm", "15.18", "15.18"} {
		if strLen != 0 {
			putInt(strLen)
			b = append(b, s...)
			continue
		}
		putInt(uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func TestCustomHeaderHostileLengths(t *testing.T) {
	good, err := parseCustomHeader(customHeader(4, 0))
	if err != nil || good.Database != "crm" || good.DumpVersion != "15.18" || good.Created.Year() != 2025 {
		t.Fatalf("a well-formed header: %+v, %v", good, err)
	}
	for _, n := range []uint64{math.MaxInt64 - 8, math.MaxInt64, math.MaxUint64, 1 << 40, 1000} {
		b := customHeader(8, n)
		if len(b) > 128 {
			t.Fatalf("the archive is %d bytes, want about 100", len(b))
		}
		info, err := parseCustomHeader(b)
		if err == nil {
			t.Errorf("length %d: no error, got %+v", n, info)
		}
	}
}

// panicArchive is an ArchiveReader with a bug.
type panicArchive struct{}

func (panicArchive) ReadArchive(context.Context, io.Reader) error { panic("index out of range [7]") }

func TestVerifyRecoversAPanicAsUnreadable(t *testing.T) {
	body := append(customHeader(8, 0), make([]byte, 64)...) // integer size 8: read by pg_restore, not natively
	now := time.Date(2025, 12, 29, 3, 0, 0, 0, time.UTC)
	src := &memSource{objs: map[string][]byte{"a.dump": body}, mod: map[string]time.Time{"a.dump": now.Add(-time.Hour)},
		sums: map[string]string{"a.dump": hexsum(body)}}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tg := Target{Name: "crm", Match: regexp.MustCompile(`\.dump$`), Checksum: ChecksumS3, Manifest: "CHECKSUM",
		Poll: time.Minute, VerifyLast: 1, BackupGrace: time.Minute}
	w, err := NewWatcher(tg, src, panicArchive{}, nil, t.TempDir(), log, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	w.Scan(context.Background())
	st := w.Status()
	if st.LastResult == nil || st.LastResult.Reason != ReasonUnreadableArchive || !strings.Contains(st.LastResult.Error, "panic: index out of range") {
		t.Fatalf("last result %+v, want unreadable_archive naming the panic", st.LastResult)
	}
	if st.Failures[ReasonUnreadableArchive] != 1 {
		t.Errorf("unreadable_archive failures = %d, want 1", st.Failures[ReasonUnreadableArchive])
	}
	if !strings.Contains(logs.String(), "stack=") || !strings.Contains(logs.String(), "panicArchive.ReadArchive") {
		t.Errorf("the log lacks the panic's stack:\n%s", logs.String())
	}
}

// panicScratch is a Scratch whose Create panics.
type panicScratch struct{}

func (panicScratch) Create(context.Context, string, ArchiveInfo) (ScratchDB, error) {
	panic("nil map write")
}
func (panicScratch) Location() string { return "embedded" }

// panicSource is a Source whose bodies panic when read.
type panicSource struct{ *memSource }

func (p panicSource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if _, err := p.memSource.Open(ctx, key); err != nil {
		return nil, err
	}
	return io.NopCloser(panicReader{}), nil
}

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("slice bounds out of range [:9] with capacity 8") }

func TestDrillRecoversAPanicAsThePhaseFailure(t *testing.T) {
	body := append(customHeader(8, 0), make([]byte, 64)...)
	now := time.Date(2025, 12, 29, 3, 0, 0, 0, time.UTC)
	src := &memSource{objs: map[string][]byte{"a.dump": body}, mod: map[string]time.Time{"a.dump": now.Add(-time.Hour)},
		sums: map[string]string{"a.dump": hexsum(body)}}
	tg := Target{Name: "crm", Match: regexp.MustCompile(`\.dump$`), Checksum: ChecksumS3, Manifest: "CHECKSUM",
		BackupGrace: time.Minute, Drill: DrillSpec{Timeout: time.Minute, Jobs: 1}}
	for _, tc := range []struct {
		name  string
		src   Source
		sc    Scratch
		phase Phase
		frame string
	}{
		{"verify", panicSource{src}, panicScratch{}, PhaseVerify, "panicReader.Read"},
		{"restore", src, panicScratch{}, PhaseRestore, "panicScratch.Create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			state := t.TempDir()
			d := NewDriller(tg, tc.src, drainArchive{}, tc.sc, nil, state, slog.New(slog.NewTextHandler(&logs, nil)), func() time.Time { return now })
			r := d.Run(context.Background(), "test")
			if r.OK || r.FailedPhase != tc.phase || !strings.Contains(r.Error, "panic") {
				t.Fatalf("drill: ok %v, phase %q, error %q; want a %s failure naming the panic", r.OK, r.FailedPhase, r.Error, tc.phase)
			}
			if st := d.Status(); st.Failures[tc.phase] != 1 || st.InProgress {
				t.Errorf("status %+v", st)
			}
			if !strings.Contains(logs.String(), tc.frame) {
				t.Errorf("the log lacks the panic's stack:\n%s", logs.String())
			}
		})
	}
}

// drainArchive reads an archive to its end and finds nothing wrong.
type drainArchive struct{}

func (drainArchive) ReadArchive(_ context.Context, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// FuzzArchiveHeader feeds the start of an archive, as a verification reads it,
// to the header parsers. Seeds: the heads of real pg_dump 15 custom archives
// (compressed and -Z0), a plain dump and its gzip.
func FuzzArchiveHeader(f *testing.F) {
	f.Add(customHeader(4, 0))
	f.Add(customHeader(8, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseCustomHeader(b)
		if err == nil {
			if n := len(info.Database) + len(info.ServerVersion) + len(info.DumpVersion); n > len(b) {
				t.Fatalf("header strings of %d bytes from %d bytes of input", n, len(b))
			}
			if !bytes.HasPrefix(b, []byte("PGDMP")) {
				t.Fatalf("a header without the magic was accepted")
			}
		}
		info, _, err = readArchive(context.Background(), bufio.NewReader(bytes.NewReader(b)), drainArchive{}, readOptions{maxPlain: 1 << 20})
		if err == nil && info.Format == "" {
			t.Fatalf("an archive read without error has no format")
		}
	})
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// FuzzFindSum feeds manifests and sidecars to their parser. Seeds:
// sha256sum(1) output for real dumps, with and without ./ and *, and BSD style.
func FuzzFindSum(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef  crm.dump\n"), "crm.dump")
	f.Fuzz(func(t *testing.T, data []byte, want string) {
		sum, err := findSum(bytes.NewReader(data), want, "k/"+want)
		if err != nil {
			return
		}
		if !hexRE.MatchString(sum) {
			t.Fatalf("sum %q is not 64 lower-case hex digits", sum)
		}
		if !bytes.Contains(bytes.ToLower(data), []byte(sum)) {
			t.Fatalf("sum %q is not in the input", sum)
		}
	})
}
