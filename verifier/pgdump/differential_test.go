package pgdump_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier/pgdump"
)

// pagilaLike is a small film-rental schema in the shape of Pagila: lookup
// tables, a many-to-many link, foreign keys, a view, a function, a trigger,
// an enum, a domain, arrays, and rentals and payments partitioned by month.
const pagilaLike = `
CREATE TYPE mpaa_rating AS ENUM ('G', 'PG', 'PG-13', 'R', 'NC-17');
CREATE DOMAIN year AS integer CHECK (VALUE >= 1901 AND VALUE <= 2155);
CREATE TABLE language (language_id serial PRIMARY KEY, name char(20) NOT NULL, last_update timestamptz NOT NULL DEFAULT now());
CREATE TABLE actor (actor_id serial PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, last_update timestamptz NOT NULL DEFAULT now());
CREATE TABLE film (film_id serial PRIMARY KEY, title text NOT NULL, description text, release_year year,
  language_id int NOT NULL REFERENCES language, rental_rate numeric(4,2) NOT NULL DEFAULT 4.99,
  rating mpaa_rating DEFAULT 'G', special_features text[], fulltext tsvector, last_update timestamptz NOT NULL DEFAULT now());
CREATE INDEX film_fulltext_idx ON film USING gist (fulltext);
CREATE TABLE film_actor (actor_id int NOT NULL REFERENCES actor, film_id int NOT NULL REFERENCES film, PRIMARY KEY (actor_id, film_id));
CREATE TABLE customer (customer_id serial PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, email text, active boolean NOT NULL DEFAULT true);
CREATE TABLE rental (rental_id serial, rental_date timestamptz NOT NULL, film_id int NOT NULL REFERENCES film,
  customer_id int NOT NULL REFERENCES customer, return_date timestamptz, PRIMARY KEY (rental_id, rental_date))
  PARTITION BY RANGE (rental_date);
CREATE TABLE rental_2022_01 PARTITION OF rental FOR VALUES FROM ('2022-01-01') TO ('2022-02-01');
CREATE TABLE rental_2022_02 PARTITION OF rental FOR VALUES FROM ('2022-02-01') TO ('2022-03-01');
CREATE TABLE payment (payment_id serial, customer_id int NOT NULL REFERENCES customer, rental_id int NOT NULL,
  amount numeric(5,2) NOT NULL, payment_date timestamptz NOT NULL, PRIMARY KEY (payment_date, payment_id))
  PARTITION BY RANGE (payment_date);
CREATE TABLE payment_p2022_01 PARTITION OF payment FOR VALUES FROM ('2022-01-01') TO ('2022-02-01');
CREATE TABLE payment_p2022_02 PARTITION OF payment FOR VALUES FROM ('2022-02-01') TO ('2022-03-01');
CREATE FUNCTION last_updated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.last_update = now(); RETURN NEW; END $$;
CREATE TRIGGER last_updated BEFORE UPDATE ON actor FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE VIEW actor_info AS SELECT a.actor_id, a.first_name, a.last_name, count(fa.film_id) AS films
  FROM actor a LEFT JOIN film_actor fa USING (actor_id) GROUP BY a.actor_id;
COMMENT ON TABLE film IS 'Films available for rent';
INSERT INTO language (name) VALUES ('English'), ('Italian'), ('Japanese'), ('Mandarin'), ('French'), ('German');
INSERT INTO actor (first_name, last_name) SELECT 'First' || g, 'Last' || g FROM generate_series(1, 200) g;
INSERT INTO film (title, description, release_year, language_id, rating, special_features, fulltext)
  SELECT 'FILM ' || g, md5(g::text) || ' ' || md5((g * 7)::text), 2000 + g % 20, 1 + g % 6,
         (ARRAY['G','PG','PG-13','R','NC-17']::mpaa_rating[])[1 + g % 5], ARRAY['Trailers', 'Commentaries'],
         to_tsvector('english', 'film number ' || g)
  FROM generate_series(1, 1000) g;
INSERT INTO film_actor SELECT 1 + (g % 200), 1 + (g * 13) % 1000 FROM generate_series(1, 5000) g ON CONFLICT DO NOTHING;
INSERT INTO customer (first_name, last_name, email) SELECT 'C' || g, 'D' || g, 'c' || g || '@example.org' FROM generate_series(1, 600) g;
INSERT INTO rental (rental_date, film_id, customer_id, return_date)
  SELECT timestamptz '2022-01-01' + g * interval '13 minutes', 1 + g % 1000, 1 + g % 600, timestamptz '2022-01-03' + g * interval '13 minutes'
  FROM generate_series(1, 6000) g;
INSERT INTO payment (customer_id, rental_id, amount, payment_date)
  SELECT 1 + g % 600, g, (g % 10) + 0.99, timestamptz '2022-01-01' + g * interval '13 minutes' FROM generate_series(1, 6000) g;
`

// tinySQL makes the database whose dump is cut and flipped byte by byte:
// small, but with every kind of block (table data and a large object).
const tinySQL = `
CREATE TABLE t (id int PRIMARY KEY, name text);
INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 30) g;
SELECT lo_from_bytea(0, convert_to('a large object', 'UTF8'));
`

const lobsSQL = `
CREATE TABLE docs (id int PRIMARY KEY, body oid);
INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to(repeat(md5(g::text), 64 * g), 'UTF8')) FROM generate_series(1, 40) g;
`

type dumps struct {
	pg  *testenv.Postgres
	dir string
}

// setUp starts one cluster for the package's tests and fills its databases.
func setUp(t *testing.T) *dumps {
	t.Helper()
	pg := testenv.StartPostgres(t)
	for db, sql := range map[string]string{"tiny": tinySQL, "pagila": pagilaLike, "lobs": lobsSQL} {
		pg.Exec(t, "postgres", "CREATE DATABASE "+db)
		pg.Exec(t, db, sql)
	}
	pg.CreateSample(t, "crm", 2000)
	pg.Exec(t, "postgres", "CREATE DATABASE empty")
	return &dumps{pg: pg, dir: t.TempDir()}
}

// dump writes a dump of db made with extra pg_dump arguments and returns its
// path. A dump to a pipe leaves the data offsets unset.
func (d *dumps) dump(t *testing.T, name, db string, pipe bool, extra ...string) string {
	t.Helper()
	path := filepath.Join(d.dir, name+".dump")
	args := append([]string{"-d", d.pg.DSN(db, ""), "-Fc"}, extra...)
	cmd := exec.Command(d.pg.Bins.Path("pg_dump"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if pipe {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// A pipe, not the file: pg_dump cannot seek back to fill in offsets.
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadFrom(out); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("pg_dump: %v: %s", err, stderr.String())
		}
		return path
	}
	cmd.Args = append(cmd.Args, "-f", path)
	if err := cmd.Run(); err != nil {
		t.Fatalf("pg_dump: %v: %s", err, stderr.String())
	}
	return path
}

// pgRestoreVerdict runs `pg_restore -f /dev/null` on the bytes in path. It
// reports flagged when pg_restore fails, and hung when it was still running
// after the timeout (pg_restore spins forever on some corrupt zlib data).
func pgRestoreVerdict(bin, path string) (flagged, hung bool, out string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-f", os.DevNull, path)
	b, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return true, true, "timed out"
	}
	return err != nil, false, string(b)
}

func readFile(t *testing.T, path string, workers int) (pgdump.Info, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return pgdump.Read(context.Background(), f, pgdump.Options{Workers: workers})
}

// TestRealDumps reads real pg_dump archives of every shape with both
// readers: both must accept them, and the native reader must count what
// pg_restore lists.
func TestRealDumps(t *testing.T) {
	d := setUp(t)
	type tc struct {
		name, db string
		pipe     bool
		extra    []string
	}
	cases := []tc{
		{"pagila-default", "pagila", false, nil},
		{"pagila-z0", "pagila", false, []string{"-Z0"}},
		{"pagila-z9", "pagila", false, []string{"-Z9"}},
		{"pagila-pipe", "pagila", true, nil},
		{"pagila-schema-only", "pagila", false, []string{"--schema-only"}},
		{"crm-default", "crm", false, nil},
		{"crm-z0-pipe", "crm", true, []string{"-Z0"}},
		{"lobs-default", "lobs", false, nil},
		{"lobs-z0", "lobs", false, []string{"-Z0"}},
		{"lobs-z9-pipe", "lobs", true, []string{"-Z9"}},
		{"lobs-schema-only", "lobs", false, []string{"--schema-only"}},
		{"tiny-default", "tiny", false, nil},
		{"tiny-z0", "tiny", false, []string{"-Z0"}},
		{"empty", "empty", false, nil},
		{"pagila-one-partition", "pagila", false, []string{"-t", "rental_2022_01"}},
	}
	inflated := map[string]int64{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := d.dump(t, c.name, c.db, c.pipe, c.extra...)
			if flagged, _, out := pgRestoreVerdict(d.pg.Bins.Path("pg_restore"), path); flagged {
				t.Fatalf("pg_restore rejects a real dump: %s", out)
			}
			var infos []pgdump.Info
			for _, workers := range []int{1, 2, 4} {
				info, err := readFile(t, path, workers)
				if err != nil {
					t.Fatalf("workers %d: %v", workers, err)
				}
				infos = append(infos, info)
			}
			if infos[0] != infos[1] || infos[0] != infos[2] {
				t.Errorf("infos differ by worker count:\n%+v\n%+v\n%+v", infos[0], infos[1], infos[2])
			}
			info := infos[0]
			st, _ := os.Stat(path)
			if info.BytesRead != st.Size() {
				t.Errorf("BytesRead = %d, file has %d", info.BytesRead, st.Size())
			}
			if info.Database != c.db || !strings.HasPrefix(info.DumpVersion, "15.") || !strings.HasPrefix(info.ServerVersion, "15.") {
				t.Errorf("header: got database %q, pg_dump %q, server %q", info.Database, info.DumpVersion, info.ServerVersion)
			}
			if age := time.Since(info.Created); age < -24*time.Hour || age > 24*time.Hour {
				t.Errorf("Created = %v, not around now", info.Created)
			}
			if info.ArchiveVersion != "1.14-0" {
				t.Errorf("ArchiveVersion = %q, want 1.14-0", info.ArchiveVersion)
			}
			wantComp := pgdump.CompressionGzip
			if slicesContain(c.extra, "-Z0") {
				wantComp = pgdump.CompressionNone
			}
			if info.Compression != wantComp {
				t.Errorf("Compression = %q, want %q", info.Compression, wantComp)
			}
			entries, dataEntries := listTOC(t, d.pg.Bins.Path("pg_restore"), path)
			// pg_restore -l leaves out the ENCODING, STDSTRINGS, SEARCHPATH
			// and DATABASE entries every pg_dump 15 archive holds.
			if info.TOCEntries != entries+4 || info.DataEntries != dataEntries || info.DataBlocks != dataEntries {
				t.Errorf("TOC: native %d entries, %d with data, %d blocks; pg_restore -l lists %d entries, %d with data",
					info.TOCEntries, info.DataEntries, info.DataBlocks, entries, dataEntries)
			}
			if c.db == "lobs" && !slicesContain(c.extra, "--schema-only") && info.LargeObjects != 40 {
				t.Errorf("LargeObjects = %d, want 40", info.LargeObjects)
			}
			key := c.db + strings.Join(c.extra, "")
			key = strings.NewReplacer("-Z0", "", "-Z9", "").Replace(key)
			if prev, ok := inflated[key]; ok && prev != info.BytesInflated {
				t.Errorf("BytesInflated = %d, another compression of the same data inflated to %d", info.BytesInflated, prev)
			}
			inflated[key] = info.BytesInflated
			if !slicesContain(c.extra, "--schema-only") && c.db != "empty" && info.BytesInflated == 0 {
				t.Error("BytesInflated = 0 for a dump with data")
			}
			t.Logf("%d bytes, %d TOC entries, %d data blocks, %d LOs, %d bytes inflated", st.Size(), info.TOCEntries, info.DataBlocks, info.LargeObjects, info.BytesInflated)
		})
	}
	if len(inflated) < 8 {
		t.Fatalf("only %d distinct data sets compared", len(inflated))
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// listTOC counts the entries pg_restore -l lists, and those that carry
// data (TABLE DATA and BLOBS).
func listTOC(t *testing.T, bin, path string) (entries, data int) {
	t.Helper()
	out, err := exec.Command(bin, "-l", path).Output()
	if err != nil {
		t.Fatalf("pg_restore -l: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		entries++
		if strings.Contains(line, " TABLE DATA ") || strings.Contains(line, " BLOBS ") {
			data++
		}
	}
	return entries, data
}

type verdicts struct {
	both, nativeOnly, pgOnly, neither, fallback, hung int
	nativeOnlyWhy                                     map[string]int
	misses                                            []string
}

// TestEveryCutAndFlip compares the two readers on every truncation and every
// single-byte flip (xor 0xff) of a small dump, gzip-compressed and not: the
// native reader must flag every archive pg_restore flags. With -short, every
// seventh position only.
func TestEveryCutAndFlip(t *testing.T) {
	d := setUp(t)
	bin := d.pg.Bins.Path("pg_restore")
	for _, z := range []string{"default", "z0"} {
		t.Run(z, func(t *testing.T) {
			var extra []string
			if z == "z0" {
				extra = []string{"-Z0"}
			}
			path := d.dump(t, "tiny-"+z, "tiny", false, extra...)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if os.Getenv("BACKUPVERIFY_WRITE_SEEDS") != "" {
				writeSeed(t, "tiny-"+z, orig)
			}
			// Every position of the compressed dump; every fifth of the
			// uncompressed one, whose data bytes are unchecked by design
			// (both readers pass them through). -short: every seventh.
			// BACKUPVERIFY_ALL_MUTANTS=1: every position of both.
			step := 1
			if z == "z0" {
				step = 5
			}
			if testing.Short() {
				step = 7
			}
			if os.Getenv("BACKUPVERIFY_ALL_MUTANTS") != "" {
				step = 1
			}
			type mutant struct {
				what string
				data []byte
			}
			var ms []mutant
			for i := 0; i < len(orig); i += step {
				ms = append(ms, mutant{fmt.Sprintf("cut at %d", i), orig[:i]})
				b := bytes.Clone(orig)
				b[i] ^= 0xff
				ms = append(ms, mutant{fmt.Sprintf("flip at %d", i), b})
			}
			v := verdicts{nativeOnlyWhy: map[string]int{}}
			var mu sync.Mutex
			work := make(chan mutant)
			var wg sync.WaitGroup
			dir := t.TempDir()
			for w := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := filepath.Join(dir, strconv.Itoa(w))
					for m := range work {
						if err := os.WriteFile(p, m.data, 0o600); err != nil {
							t.Error(err)
							return
						}
						pgFlag, hung, _ := pgRestoreVerdict(bin, p)
						_, nerr := pgdump.Read(context.Background(), bytes.NewReader(m.data), pgdump.Options{Workers: 1 + w})
						if nerr != nil && !errors.Is(nerr, pgdump.ErrTruncated) && !errors.Is(nerr, pgdump.ErrCorrupt) && !errors.Is(nerr, pgdump.ErrUnsupported) {
							t.Errorf("%s: error of no kind: %v", m.what, nerr)
						}
						nFlag := errors.Is(nerr, pgdump.ErrTruncated) || errors.Is(nerr, pgdump.ErrCorrupt)
						unsupported := errors.Is(nerr, pgdump.ErrUnsupported)
						mu.Lock()
						switch {
						case hung:
							v.hung++
							if !nFlag {
								v.misses = append(v.misses, fmt.Sprintf("%s: pg_restore hangs, native says %v", m.what, nerr))
							}
						case unsupported:
							v.fallback++
						case pgFlag && nFlag:
							v.both++
						case pgFlag:
							v.pgOnly++
							v.misses = append(v.misses, m.what)
						case nFlag:
							v.nativeOnly++
							v.nativeOnlyWhy[reasonOf(nerr)]++
						default:
							v.neither++
						}
						mu.Unlock()
					}
				}()
			}
			for _, m := range ms {
				work <- m
			}
			close(work)
			wg.Wait()
			t.Logf("%d-byte dump, %d mutants: both flag %d, native only %d, pg_restore only %d, neither %d, native unsupported (pg_restore decides) %d, pg_restore hangs %d",
				len(orig), len(ms), v.both, v.nativeOnly, v.pgOnly, v.neither, v.fallback, v.hung)
			var why []string
			for k, n := range v.nativeOnlyWhy {
				why = append(why, fmt.Sprintf("%4d %s", n, k))
			}
			sort.Strings(why)
			t.Logf("flagged by the native reader only:\n%s", strings.Join(why, "\n"))
			if len(v.misses) > 0 {
				t.Errorf("pg_restore flags %d mutants the native reader accepts:\n%s", len(v.misses), strings.Join(v.misses, "\n"))
			}
			if v.both == 0 || v.neither == 0 {
				t.Errorf("degenerate comparison: %+v", v)
			}
		})
	}
}

// reasonOf is an error message without its numbers, to group mutants.
func reasonOf(err error) string {
	var e *pgdump.Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	msg := e.Msg
	if i := strings.Index(msg, ": "); i >= 0 && strings.Contains(msg[:i], "entry") {
		msg = "<entry>" + msg[i:]
	}
	var b strings.Builder
	for _, r := range msg {
		if r >= '0' && r <= '9' {
			if !strings.HasSuffix(b.String(), "N") {
				b.WriteByte('N')
			}
			continue
		}
		b.WriteRune(r)
	}
	return fmt.Sprintf("%v: %s", e.Kind, b.String())
}

// writeSeed stores a dump in the fuzz corpus (run with
// BACKUPVERIFY_WRITE_SEEDS=1 to refresh it).
func writeSeed(t *testing.T, name string, data []byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", "FuzzRead")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
