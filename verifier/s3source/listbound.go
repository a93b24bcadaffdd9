package s3source

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The SDK reads a ListObjectsV2 answer of any size, into memory when it is
// an error or holds many keys, and reads a 200 with an empty body, or with a
// document other than a ListBucketResult (a captive portal's page), as a
// listing of no objects: a bucket that looks empty. A listing through the
// SDK is held to what a direct one accepts (list.go): at most maxListBody
// bytes, and a 2xx answer whose root element is <ListBucketResult>. An
// <Error> sent with 200 stays the SDK's to read: it makes it a 500, with
// the store's code and message, and tries again.

// listAnswerError is a ListObjectsV2 answer refused.
type listAnswerError struct{ msg string }

func (e *listAnswerError) Error() string { return e.msg }

// errListTooLarge refuses an answer past maxListBody, direct or through the SDK.
var errListTooLarge = &listAnswerError{fmt.Sprintf("ListObjectsV2 answer larger than %d bytes (%d MiB), refused", maxListBody, maxListBody>>20)}

// rootPeek is how much of a 2xx answer is read to find its root element;
// a root later than that (S3's is within 100 bytes) is refused.
const rootPeek = 4 << 10

// boundListing holds each ListObjectsV2 answer of one call to the above.
func boundListing(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
		// Last in the step: next to the transport, below the SDK's readers
		// of the body.
		return stack.Deserialize.Add(listBounds{}, middleware.After)
	})
}

type listBounds struct{}

func (listBounds) ID() string { return "backupverify:ListBounds" }

func (listBounds) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error,
) {
	out, md, err := next.HandleDeserialize(ctx, in)
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if !ok || resp.Body == nil {
		return out, md, err
	}
	b := &boundedBody{r: resp.Body, c: resp.Body, left: maxListBody}
	resp.Body = b
	if err != nil || resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return out, md, err
	}
	head := make([]byte, rootPeek)
	n, rerr := io.ReadFull(b, head)
	head = head[:n]
	if rerr != nil && rerr != io.ErrUnexpectedEOF && rerr != io.EOF {
		return out, md, rerr
	}
	b.r = io.MultiReader(bytes.NewReader(head), b.r)
	b.left += int64(n)
	if err := checkRoot(resp.Status, head, n < rootPeek); err != nil {
		return out, md, err
	}
	return out, md, nil
}

// checkRoot refuses a 2xx answer whose root element, in head (all of the
// body when whole), is not a ListBucketResult, nor an <Error>.
func checkRoot(status string, head []byte, whole bool) error {
	if len(head) == 0 {
		return &listAnswerError{fmt.Sprintf("ListObjectsV2 answered %s with an empty body, not a <ListBucketResult>", status)}
	}
	d := xml.NewDecoder(bytes.NewReader(head))
	for {
		t, err := d.RawToken()
		if err == io.EOF && whole {
			return &listAnswerError{fmt.Sprintf("ListObjectsV2 answered %s with no XML element, not a <ListBucketResult>: %.200q", status, head)}
		}
		if err != nil && whole {
			return &listAnswerError{fmt.Sprintf("ListObjectsV2 answered %s with a body that is not XML (%v), not a <ListBucketResult>: %.200q", status, err, head)}
		}
		if err != nil {
			return &listAnswerError{fmt.Sprintf("ListObjectsV2 answered %s with no XML element in its first %d bytes (%v), not a <ListBucketResult>: %.200q",
				status, len(head), err, head)}
		}
		if se, ok := t.(xml.StartElement); ok {
			if se.Name.Local == "ListBucketResult" || se.Name.Local == "Error" {
				return nil
			}
			return &listAnswerError{fmt.Sprintf("ListObjectsV2 answered %s with <%s>, not a <ListBucketResult>: %.200q", status, se.Name.Local, head)}
		}
	}
}

// boundedBody fails a read past left bytes.
type boundedBody struct {
	r    io.Reader
	c    io.Closer
	left int64
	err  error
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left <= 0 {
		var one [1]byte
		n, err := b.r.Read(one[:])
		if n == 0 {
			return 0, err
		}
		b.err = errListTooLarge
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error { return b.c.Close() }
