// Package sourcetest is the conformance suite every verifier.Source passes:
// one shared test body, run by each Source's own tests with a constructor
// for a fresh, empty store.
package sourcetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/verifier"
)

// Store is a fresh, empty Source and the means to fill it.
type Store struct {
	Source verifier.Source
	// Put stores b at key (relative to the Source's root, / as separator),
	// replacing what is there in place.
	Put func(t *testing.T, key string, b []byte)
	// PutOutside stores b beside the Source's root, where it must not be
	// listed: a sibling prefix or folder whose name starts with the root's.
	PutOutside func(t *testing.T, name string, b []byte)
}

// RunSuite runs every conformance test against Stores made by newStore.
func RunSuite(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("ListEmpty", func(t *testing.T) { testListEmpty(t, newStore(t)) })
	t.Run("ListBelowRootOnly", func(t *testing.T) { testListBelowRoot(t, newStore(t)) })
	t.Run("OpenReadsWhole", func(t *testing.T) { testOpen(t, newStore(t)) })
	t.Run("MissingKey", func(t *testing.T) { testMissing(t, newStore(t)) })
	t.Run("ReplacedKeyChangesETag", func(t *testing.T) { testReplace(t, newStore(t)) })
	t.Run("CancelStopsRead", func(t *testing.T) { testCancel(t, newStore(t)) })
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func list(t *testing.T, s verifier.Source) map[string]verifier.Object {
	t.Helper()
	objs, err := s.List(ctxT(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	m := map[string]verifier.Object{}
	for _, o := range objs {
		if _, dup := m[o.Key]; dup {
			t.Errorf("List returned %q twice", o.Key)
		}
		m[o.Key] = o
	}
	return m
}

func keys(m map[string]verifier.Object) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

func testListEmpty(t *testing.T, st Store) {
	if m := list(t, st.Source); len(m) != 0 {
		t.Fatalf("empty source listed %v", keys(m))
	}
}

func testListBelowRoot(t *testing.T, st Store) {
	start := time.Now().Add(-time.Minute)
	want := map[string][]byte{
		"a.dump":                   []byte("first"),
		"2026/01/02/b.dump":        bytes.Repeat([]byte("x"), 70000),
		"2026/01/02/CHECKSUM":      []byte("sums\n"),
		"nested/deeper/empty.dump": {},
	}
	for k, b := range want {
		st.Put(t, k, b)
	}
	st.PutOutside(t, "outside.dump", []byte("not mine"))
	m := list(t, st.Source)
	if got, w := strings.Join(keys(m), " "), "2026/01/02/CHECKSUM 2026/01/02/b.dump a.dump nested/deeper/empty.dump"; got != w {
		t.Fatalf("listed keys %q, want %q", got, w)
	}
	for k, b := range want {
		o := m[k]
		if o.Size != int64(len(b)) {
			t.Errorf("%s: Size %d, want %d", k, o.Size, len(b))
		}
		if o.ETag == "" {
			t.Errorf("%s: no ETag", k)
		}
		if o.LastModified.Before(start) || o.LastModified.After(time.Now().Add(time.Minute)) {
			t.Errorf("%s: LastModified %v, not about now", k, o.LastModified)
		}
		if o.LastModified.Location() != time.UTC {
			t.Errorf("%s: LastModified %v is not in UTC", k, o.LastModified)
		}
	}
	if m["a.dump"].ETag == m["2026/01/02/b.dump"].ETag {
		t.Errorf("two objects share ETag %q", m["a.dump"].ETag)
	}
}

func read(t *testing.T, s verifier.Source, key string) []byte {
	t.Helper()
	r, err := s.Open(ctxT(t), key)
	if err != nil {
		t.Fatalf("Open %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func testOpen(t *testing.T, st Store) {
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(i * 7)
	}
	st.Put(t, "x/big.dump", big)
	st.Put(t, "small", []byte("hello"))
	st.Put(t, "empty", nil)
	if b := read(t, st.Source, "x/big.dump"); !bytes.Equal(b, big) {
		t.Errorf("x/big.dump: read %d bytes, differing from the %d stored", len(b), len(big))
	}
	if b := read(t, st.Source, "small"); string(b) != "hello" {
		t.Errorf("small: read %q", b)
	}
	if b := read(t, st.Source, "empty"); len(b) != 0 {
		t.Errorf("empty: read %q", b)
	}
	// Two bodies of one object read independently.
	r1, err := st.Source.Open(ctxT(t), "small")
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := st.Source.Open(ctxT(t), "small")
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 2)
	if _, err := io.ReadFull(r1, p); err != nil || string(p) != "he" {
		t.Fatalf("first body: %q %v", p, err)
	}
	if b, err := io.ReadAll(r2); err != nil || string(b) != "hello" {
		t.Fatalf("second body: %q %v", b, err)
	}
	r2.Close()
	if b, err := io.ReadAll(r1); err != nil || string(b) != "llo" {
		t.Fatalf("first body after the second: %q %v", b, err)
	}
}

func testMissing(t *testing.T, st Store) {
	st.Put(t, "dir/present", []byte("x"))
	for _, k := range []string{"absent.dump", "dir/absent", "nodir/absent"} {
		r, err := st.Source.Open(ctxT(t), k)
		if err == nil {
			r.Close()
			t.Errorf("Open %s: no error", k)
		} else if !errors.Is(err, verifier.ErrNotFound) {
			t.Errorf("Open %s: %v, not wrapping ErrNotFound", k, err)
		}
		sum, err := st.Source.StoredChecksum(ctxT(t), k)
		if !errors.Is(err, verifier.ErrNotFound) {
			t.Errorf("StoredChecksum %s: %q, %v; want an error wrapping ErrNotFound", k, sum, err)
		}
	}
	if _, err := st.Source.StoredChecksum(ctxT(t), "dir/present"); err != nil {
		t.Errorf("StoredChecksum of a present key: %v", err)
	}
}

func testReplace(t *testing.T, st Store) {
	st.Put(t, "r.dump", []byte("version one"))
	before := list(t, st.Source)["r.dump"]
	st.Put(t, "r.dump", []byte("version two")) // same size
	after := list(t, st.Source)["r.dump"]
	if before.ETag == after.ETag {
		t.Fatalf("ETag %q unchanged after the content was replaced", after.ETag)
	}
	if b := read(t, st.Source, "r.dump"); string(b) != "version two" {
		t.Fatalf("read %q after the replacement", b)
	}
	if again := list(t, st.Source)["r.dump"]; again.ETag != after.ETag {
		t.Fatalf("ETag changed from %q to %q with no change to the content", after.ETag, again.ETag)
	}
}

func testCancel(t *testing.T, st Store) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	st.Put(t, "c.dump", big)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := st.Source.Open(ctx, "c.dump")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	cancel()
	start := time.Now()
	n, err := io.Copy(io.Discard, r)
	if err == nil {
		t.Fatalf("read the remaining %d bytes to the end after the context was cancelled", n)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, not wrapping context.Canceled", err)
	}
	if n+64<<10 >= int64(len(big)) {
		t.Errorf("read all %d bytes despite the cancel", n+64<<10)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v to stop the read", d)
	}
	if _, err := st.Source.List(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a cancelled context: %v, not wrapping context.Canceled", err)
	}
}
