package verifier

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/backupverify/backupverify/config"
)

// memSource is a Source over a map, for fast edge-case tests.
type memSource struct {
	objs  map[string][]byte
	mod   map[string]time.Time
	sums  map[string]string
	opens int
}

func (m *memSource) String() string { return "mem://" }

func (m *memSource) List(context.Context) ([]Object, error) {
	var out []Object
	for k, v := range m.objs {
		s := sha256.Sum256(v)
		out = append(out, Object{Key: k, Size: int64(len(v)), ETag: hex.EncodeToString(s[:8]), LastModified: m.mod[k]})
	}
	return out, nil
}

func (m *memSource) Open(_ context.Context, key string) (io.ReadCloser, error) {
	b, ok := m.objs[key]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", key, ErrNotFound)
	}
	m.opens++
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memSource) StoredChecksum(_ context.Context, key string) (string, error) {
	return m.sums[key], nil
}

// noArchive fails the test if a custom archive reaches it.
type noArchive struct{ t *testing.T }

func (n noArchive) ReadArchive(context.Context, io.Reader) error {
	n.t.Error("plain dumps must not go through pg_restore")
	return nil
}

const plainDump = `--
-- PostgreSQL database dump
--

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

-- Started on 2025-12-29 02:00:07 UTC

SET statement_timeout = 0;
CREATE TABLE leads (id bigint);
COPY leads (id) FROM stdin;
1
2
\.

--
-- PostgreSQL database dump complete
--

`

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func hexsum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestVerifyPlain(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 1, 0, 0, time.UTC)
	now := func() time.Time { return t0.Add(time.Hour) }
	full := []byte(plainDump)
	cut := full[:len(full)-60]
	gzFull := gz(t, full)
	tests := []struct {
		name       string
		body       []byte
		sum        string
		wantReason Reason
		wantFormat string
	}{
		{"sql", full, hexsum(full), "", FormatSQL},
		{"sql.gz", gzFull, hexsum(gzFull), "", FormatSQLGzip},
		{"sql cut short", cut, hexsum(cut), ReasonUnreadableArchive, FormatSQL},
		{"sql.gz cut short", gzFull[:len(gzFull)-20], hexsum(gzFull[:len(gzFull)-20]), ReasonUnreadableArchive, FormatSQLGzip},
		{"sql.gz of a cut dump", gz(t, cut), hexsum(gz(t, cut)), ReasonUnreadableArchive, FormatSQLGzip},
		{"not a dump", []byte("hello world\n"), hexsum([]byte("hello world\n")), ReasonUnreadableArchive, FormatSQL},
		{"empty", []byte{}, hexsum(nil), ReasonUnreadableArchive, ""},
		{"wrong checksum", full, hexsum(cut), ReasonMismatch, FormatSQL},
		{"no checksum", full, "", ReasonMissingChecksum, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &memSource{objs: map[string][]byte{"db.sql": tt.body}, mod: map[string]time.Time{"db.sql": t0},
				sums: map[string]string{"db.sql": tt.sum}}
			b := Backup{Object: Object{Key: "db.sql", Size: int64(len(tt.body)), LastModified: t0}, ChecksumKind: ChecksumS3}
			r, err := Verify(context.Background(), src, noArchive{t}, b, nil, now)
			if err != nil {
				t.Fatal(err)
			}
			if r.Reason != tt.wantReason || r.OK != (tt.wantReason == "") {
				t.Fatalf("reason %q ok %v (%s), want %q", r.Reason, r.OK, r.Error, tt.wantReason)
			}
			if tt.wantReason == "" {
				if r.Archive.Format != tt.wantFormat || r.Archive.DumpVersion != "15.18" || r.Archive.ServerVersion != "15.18" {
					t.Errorf("archive info %+v", r.Archive)
				}
				if want := time.Date(2025, 12, 29, 2, 0, 7, 0, time.UTC); !r.Created.Equal(want) {
					t.Errorf("created %v, want the Started on time %v", r.Created, want)
				}
			}
		})
	}
}

func TestVerifyCancelledIsNotAFailure(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := &memSource{objs: map[string][]byte{"db.sql": []byte(plainDump)}, sums: map[string]string{"db.sql": hexsum([]byte(plainDump))}}
	b := Backup{Object: Object{Key: "db.sql", Size: int64(len(plainDump))}, ChecksumKind: ChecksumS3}
	if _, err := Verify(ctx, src, noArchive{t}, b, nil, time.Now); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestFindSum(t *testing.T) {
	a, b := strings.Repeat("a", 64), strings.Repeat("B", 64)
	manifest := "# made by the backup job\n" + a + "  backup.dump\n" + b + " *./globals.sql\nSHA256 (other.dump) = " + strings.Repeat("c", 64) + "\n"
	tests := []struct {
		want, got string
		err       bool
	}{
		{"backup.dump", a, false},
		{"globals.sql", strings.ToLower(b), false},
		{"other.dump", strings.Repeat("c", 64), false},
		{"missing.dump", "", true},
	}
	for _, tt := range tests {
		got, err := findSum(strings.NewReader(manifest), tt.want, "x/"+tt.want)
		if (err != nil) != tt.err || got != tt.got {
			t.Errorf("%s: got %q, %v", tt.want, got, err)
		}
		if err != nil && !errors.Is(err, errMissingChecksum) {
			t.Errorf("%s: error %v is not a missing checksum", tt.want, err)
		}
	}
	if got, err := findSum(strings.NewReader(a+"\n"), "", "x"); err != nil || got != a {
		t.Errorf("bare sidecar: %q %v", got, err)
	}
}

func TestDiscoverLayouts(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	objs := []Object{
		{Key: "2025-12-28T0200Z/backup.dump", LastModified: t0.Add(-24 * time.Hour)},
		{Key: "2025-12-28T0200Z/CHECKSUM", LastModified: t0.Add(-24 * time.Hour)},
		{Key: "2025-12-29T0200Z/backup.dump", LastModified: t0},
		{Key: "2025-12-29T0200Z/CHECKSUM", LastModified: t0},
		{Key: "crm-20251229T0200Z.dump", LastModified: t0.Add(-time.Minute)},
		{Key: "crm-20251229T0200Z.dump.sha256", LastModified: t0.Add(-time.Minute)},
		{Key: "bare.dump", LastModified: t0.Add(-2 * time.Minute)},
		{Key: "README.txt", LastModified: t0},
	}
	re, _ := config.CompileGlob("**/*.dump")
	tg := Target{Glob: "**/*.dump", Match: re, Checksum: "auto", Manifest: "CHECKSUM"}
	got := Discover(objs, &tg, re)
	var lines []string
	for _, b := range got {
		lines = append(lines, b.Key+" "+b.ChecksumKind+" "+b.ChecksumKey)
	}
	want := []string{
		"2025-12-29T0200Z/backup.dump manifest 2025-12-29T0200Z/CHECKSUM",
		"crm-20251229T0200Z.dump sidecar crm-20251229T0200Z.dump.sha256",
		"bare.dump s3 ",
		"2025-12-28T0200Z/backup.dump manifest 2025-12-28T0200Z/CHECKSUM",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestMissed(t *testing.T) {
	sched, _ := cron.ParseStandard("0 2 * * *")
	day := time.Date(2025, 12, 29, 0, 0, 0, 0, time.UTC)
	backup := day.Add(-22 * time.Hour) // 2025-12-28 02:00
	grace := 10 * time.Minute
	tests := []struct {
		now  time.Time
		ref  time.Time
		want bool
	}{
		{day.Add(2 * time.Hour), backup, false},                                               // due now, within grace
		{day.Add(2*time.Hour + 9*time.Minute), backup, false},                                 // still within grace
		{day.Add(2*time.Hour + 10*time.Minute), backup, true},                                 // grace is over
		{day.Add(2*time.Hour + 10*time.Minute), day.Add(2 * time.Hour), false},                // today's arrived
		{day.Add(2*time.Hour + 10*time.Minute), day.Add(2*time.Hour - 20*time.Second), false}, // a little early counts
	}
	for i, tt := range tests {
		if _, got := missed(sched, tt.ref, grace, tt.now); got != tt.want {
			t.Errorf("%d: missed at %v with newest %v = %v, want %v", i, tt.now, tt.ref, got, tt.want)
		}
	}
}

func TestWatcherFirstStartAndState(t *testing.T) {
	t0 := time.Date(2025, 12, 29, 2, 0, 0, 0, time.UTC)
	clock := t0.Add(time.Hour)
	now := func() time.Time { return clock }
	src := &memSource{objs: map[string][]byte{}, mod: map[string]time.Time{}, sums: map[string]string{}}
	for i := range 30 {
		k := fmt.Sprintf("d%02d.sql", i)
		body := strings.Replace(plainDump, "02:00:07", fmt.Sprintf("02:%02d:07", i), 1)
		src.objs[k], src.mod[k], src.sums[k] = []byte(body), t0.Add(time.Duration(i)*time.Minute+30*time.Second), hexsum([]byte(body)) // uploaded after the dump started
	}
	tg := Target{Name: "t", Glob: "*.sql", Match: regexp.MustCompile(`^[^/]*\.sql$`), Checksum: "s3", Manifest: "CHECKSUM",
		VerifyLast: 2, Poll: time.Minute, BackupGrace: time.Minute, RPO: time.Hour}
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := NewWatcher(tg, src, noArchive{t}, nil, dir, log, now)
	if err != nil {
		t.Fatal(err)
	}
	w.Scan(context.Background())
	st := w.Status()
	if src.opens != 2 || st.VerifiedTotal != 2 || st.Catalogued != 30 {
		t.Fatalf("first start opened %d backups, verified %d, catalogued %d; want 2, 2, 30", src.opens, st.VerifiedTotal, st.Catalogued)
	}
	if want := time.Date(2025, 12, 29, 2, 29, 7, 0, time.UTC); !st.LastVerified.Created.Equal(want) {
		t.Errorf("newest verified %v, want %v", st.LastVerified.Created, want)
	}
	// A new backup: only it is read.
	src.objs["d30.sql"], src.mod["d30.sql"], src.sums["d30.sql"] = []byte(plainDump), t0.Add(30*time.Minute), hexsum([]byte(plainDump))
	w.Scan(context.Background())
	if src.opens != 3 {
		t.Errorf("opens = %d after one new backup, want 3", src.opens)
	}
	// Restart: state is read back, nothing is re-read.
	w2, err := NewWatcher(tg, src, noArchive{t}, nil, dir, log, now)
	if err != nil {
		t.Fatal(err)
	}
	if st2 := w2.Status(); st2.LastVerified == nil || !st2.LastVerified.Created.Equal(w.Status().LastVerified.Created) {
		t.Fatalf("restart forgot the newest verified backup")
	}
	w2.Scan(context.Background())
	if src.opens != 3 {
		t.Errorf("restart re-read backups: opens = %d, want 3", src.opens)
	}
}

// TestDurationText: a check's expectation reads its max_lag as the
// configuration writes durations.
func TestDurationText(t *testing.T) {
	for _, d := range []time.Duration{0, 1500 * time.Millisecond, 90 * time.Second, 90 * time.Minute, 25 * time.Hour,
		30 * 24 * time.Hour, 14 * 24 * time.Hour, 365 * 24 * time.Hour, -time.Minute} {
		if got, want := durationText(d), config.Duration(d).String(); got != want {
			t.Errorf("durationText(%v) = %q, want %q", d, got, want)
		}
	}
}

// countingSource counts listings, and the opens in progress at once.
type countingSource struct {
	*memSource
	lists          atomic.Int32
	open, mostOpen atomic.Int32
	hold           time.Duration
}

func (c *countingSource) List(ctx context.Context) ([]Object, error) {
	c.lists.Add(1)
	return c.memSource.List(ctx)
}

func (c *countingSource) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	n := c.open.Add(1)
	for {
		m := c.mostOpen.Load()
		if n <= m || c.mostOpen.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(c.hold)
	defer c.open.Add(-1)
	b, ok := c.objs[key]
	if !ok {
		return nil, ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// A backup_schedule with no next time (30 February) must not make the watch
// loop list the source in a tight loop: at most one scan a second.
func TestWatchLoopNeverSpins(t *testing.T) {
	src := &countingSource{memSource: &memSource{objs: map[string][]byte{}}}
	tg := Target{Name: "t", Glob: "*.sql", Match: regexp.MustCompile(`^[^/]*\.sql$`), Checksum: "none",
		BackupSchedule: "0 0 30 2 *", Poll: time.Minute, BackupGrace: time.Minute, VerifyLast: 1}
	w, err := NewWatcher(tg, src, noArchive{t}, nil, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	_ = w.Run(ctx)
	if n := src.lists.Load(); n > 3 {
		t.Errorf("%d listings in 2.5 s; want at most 3", n)
	}
}

// Watchers sharing a Gate verify at most its size at once.
func TestGateBoundsVerifications(t *testing.T) {
	gate := NewGate(3)
	var ws []*Watcher
	src := &countingSource{memSource: &memSource{objs: map[string][]byte{"a.sql": []byte(plainDump)}, mod: map[string]time.Time{}}, hold: 20 * time.Millisecond}
	for i := range 40 {
		tg := Target{Name: fmt.Sprintf("t%d", i), Glob: "*.sql", Match: regexp.MustCompile(`^[^/]*\.sql$`), Checksum: "none",
			Poll: time.Minute, BackupGrace: time.Minute, VerifyLast: 1}
		w, err := NewWatcher(tg, src, noArchive{t}, gate, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.Scan(context.Background()) }()
	}
	wg.Wait()
	for _, w := range ws {
		if w.Status().VerifiedTotal != 1 {
			t.Fatalf("%s: not verified", w.Name())
		}
	}
	if m := src.mostOpen.Load(); m > 3 || m < 1 {
		t.Errorf("%d backups read at once through a gate of 3", m)
	}
}
