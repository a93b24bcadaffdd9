package pgscratch

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// FuzzRestrictFilter feeds plain dumps through the line filter psql reads.
// Seeds: a real pg_dump 15 plain dump of the sample database.
func FuzzRestrictFilter(f *testing.F) {
	f.Add([]byte("\\restrict abc\nCOPY t (a) FROM stdin;\n\\restrict x\n\\.\nGRANT ALL ON t TO x;\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := io.ReadAll(newRestrictFilter(bytes.NewReader(in)))
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > len(in) {
			t.Fatalf("%d bytes out of %d in", len(out), len(in))
		}
		// Only whole lines are dropped: what comes out is the input's lines,
		// in order, with some left out.
		rest := in
		for _, line := range bytes.SplitAfter(out, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			i := bytes.Index(rest, line)
			if i < 0 {
				t.Fatalf("line %q is not from the input, in order", line)
			}
			rest = rest[i+len(line):]
		}
		// Outside COPY data, no line the filter drops gets through (a line
		// past filterLineMax is passed on in pieces, never dropped).
		inCopy := false
		for _, line := range strings.SplitAfter(string(out), "\n") {
			l := strings.TrimRight(line, "\r\n")
			switch {
			case inCopy:
				inCopy = l != `\.`
			case copyFromStdin.MatchString(l):
				inCopy = true
			case droppedLine.MatchString(l) && strings.HasSuffix(line, "\n") && len(line) < filterLineMax:
				t.Fatalf("line %q passed the filter outside COPY data", l)
			}
		}
	})
}

// FuzzParseRestoreErrors feeds pg_restore --verbose stderr to its parser.
// Seeds: the real output of pg_restore 15 restoring the sample database into
// one where a table of it already exists (5 errors).
func FuzzParseRestoreErrors(f *testing.F) {
	f.Add([]byte("pg_restore: from TOC entry 215; 1259 16386 TABLE leads postgres\npg_restore: error: could not execute query: ERROR:  boom\nDETAIL:  Key (email)=(a@b.c)\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out := parseRestoreOutput(bytes.NewReader(in))
		if n := bytes.Count(in, []byte("pg_restore: error: ")); len(out.errors) > n {
			t.Fatalf("%d errors from %d error lines", len(out.errors), n)
		}
		if out.parallelErrors > len(out.errors) {
			t.Fatalf("%d parallel errors of %d", out.parallelErrors, len(out.errors))
		}
		for _, e := range out.errors {
			// Each message is the rest of one error line: a DETAIL or
			// CONTEXT line (row data) never joins it.
			if strings.ContainsAny(e.msg, "\n\r") || !bytes.Contains(in, []byte(e.msg)) {
				t.Fatalf("message %q is not the rest of one error line of the input", e.msg)
			}
			if e.entry != nil && !bytes.Contains(in, []byte(e.entry.kind)) {
				t.Fatalf("entry kind %q is not from the input", e.entry.kind)
			}
		}
	})
}
