package s3source_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/backupverify/backupverify/verifier"
	"github.com/backupverify/backupverify/verifier/s3source"
)

// hostileStore is an S3 endpoint on loopback that answers every
// ListObjectsV2 with answer, and a client of it with static credentials (so
// a listing tries the direct way first, then the SDK's).
func hostileStore(t *testing.T, answer http.HandlerFunc) *s3source.Client {
	t.Helper()
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull} {
		t.Setenv(k, v)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.Query().Has("list-type") {
			http.Error(w, "not a listing", http.StatusNotImplemented)
			return
		}
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return newTestClient(t, srv.URL)
}

// bothWays lists src the way the daemon does (direct, then the SDK) and
// through the SDK's paginator alone.
func bothWays(t *testing.T, src *s3source.Source) map[string]func(context.Context) ([]verifier.Object, error) {
	return map[string]func(context.Context) ([]verifier.Object, error){
		"List":    src.List,
		"ListSDK": func(ctx context.Context) ([]verifier.Object, error) { return s3source.ListSDK(ctx, src) },
	}
}

// TestListRefusesAnswersThatAreNoListing: a 200 answer to ListObjectsV2
// whose body is empty, or a document other than a ListBucketResult (a
// captive portal's page, another S3 answer), fails the listing with an
// error naming the source and what came; the SDK alone reads each as a
// listing of no objects, and the bucket would look empty. An <Error> sent
// with 200 was already an error (the SDK's, with the store's code and
// message) and stays one; a real empty listing stays one.
func TestListRefusesAnswersThatAreNoListing(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"empty body", "", "ListObjectsV2 answered 200 OK with an empty body, not a <ListBucketResult>"},
		{"blank body", "\r\n  \n", "ListObjectsV2 answered 200 OK with no XML element, not a <ListBucketResult>"},
		{"a declaration alone", `<?xml version="1.0" encoding="UTF-8"?>`, "with no XML element, not a <ListBucketResult>"},
		{"captive portal (XHTML)", `<!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml"><head><title>Wi-Fi</title></head>` +
			`<body><p>Sign in to continue</p></body></html>`, `ListObjectsV2 answered 200 OK with <html>, not a <ListBucketResult>: "<!DOCTYPE html><html`},
		{"captive portal (HTML)", "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>Wi-Fi</title></head><body>Sign in</body></html>",
			"ListObjectsV2 answered 200 OK with a body that is not XML (XML syntax error on line 2: unquoted or missing attribute value in element), not a <ListBucketResult>: \"<!DOCTYPE html>\\n<html"},
		{"not XML", "OK\n", `ListObjectsV2 answered 200 OK with no XML element, not a <ListBucketResult>: "OK\n"`},
		{"an error document", `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>` +
			`<Message>We encountered an internal error. Please try again.</Message></Error>`, "InternalError: We encountered an internal error. Please try again."},
		{"another S3 answer", `<ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>`, "with <ListAllMyBucketsResult>, not a <ListBucketResult>"},
		{"a real empty listing", `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
			`<Name>b</Name><Prefix>db/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hostileStore(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/xml")
				_, _ = io.WriteString(w, tc.body)
			})
			for way, list := range bothWays(t, c.Source("b", "db/")) {
				objs, err := list(t.Context())
				if tc.want == "" {
					if err != nil || len(objs) != 0 {
						t.Fatalf("%s: %d objects, err = %v; want an empty listing", way, len(objs), err)
					}
					continue
				}
				if err == nil || !strings.HasPrefix(err.Error(), "list s3://b/db/: ") || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s: %d objects, err = %v; want an error with %q", way, len(objs), err, tc.want)
				}
			}
		})
	}
}

// TestListBoundsTheAnswer: a ListObjectsV2 answer larger than the direct
// listing accepts (8 MiB) fails the listing through the SDK too, naming the
// source and the limit, after at most that much has been read: the SDK alone
// reads any amount (into memory, for an error answer or one with many keys).
// The store streams 32 MiB of padding the SDK's reader skips, from one
// buffer, so neither side holds the answer.
func TestListBoundsTheAnswer(t *testing.T) {
	const size = 32 << 20
	pad := bytes.Repeat([]byte("<Pad>"+strings.Repeat("x", 4000)+"</Pad>"), 16)
	for _, status := range []int{http.StatusOK, http.StatusInternalServerError} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			var requests, most atomic.Int64
			c := hostileStore(t, func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(status)
				root := "ListBucketResult"
				if status != http.StatusOK {
					root = "Error"
				}
				sent, _ := io.WriteString(w, "<"+root+">")
				for sent < size {
					n, err := w.Write(pad)
					sent += n
					if err != nil {
						break
					}
				}
				if sent >= size {
					n, _ := io.WriteString(w, "</"+root+">")
					sent += n
				}
				for m := most.Load(); int64(sent) > m && !most.CompareAndSwap(m, int64(sent)); m = most.Load() {
				}
			})
			for way, list := range bothWays(t, c.Source("b", "db/")) {
				requests.Store(0)
				_, err := list(t.Context())
				const want = "ListObjectsV2 answer larger than 8388608 bytes (8 MiB), refused"
				if err == nil || err.Error() != "list s3://b/db/: "+want {
					t.Fatalf("%s: err = %v; want %q", way, err, want)
				}
				if n := requests.Load(); n < 1 || n > 3 {
					t.Fatalf("%s: %d requests", way, n)
				}
			}
			// What the store sent beyond 8 MiB is what loopback's socket
			// buffers hold, never the whole answer.
			if m := most.Load(); m >= size {
				t.Fatalf("an answer was read to its end (%d bytes)", m)
			}
			t.Logf("at most %d bytes sent for one answer", most.Load())
		})
	}
}
