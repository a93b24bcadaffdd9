package s3source

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// LockedUploader uploads report copies under S3 Object Lock: each copy is
// retained, in governance or compliance mode, for Days from its upload, so
// that whoever holds the host cannot delete or overwrite the evidence
// (compliance: nobody can, until the date; governance: only with
// s3:BypassGovernanceRetention). The bucket must have Object Lock enabled.
type LockedUploader struct {
	*Source
	Mode string // governance or compliance
	Days int
	Now  func() time.Time
}

// Upload implements report.Uploader.
func (u *LockedUploader) Upload(ctx context.Context, key string, body []byte) error {
	until := u.Now().Add(time.Duration(u.Days) * 24 * time.Hour).UTC()
	_, err := u.c.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:                    aws.String(u.bucket),
		Key:                       aws.String(u.prefix + key),
		Body:                      bytes.NewReader(body),
		ContentLength:             aws.Int64(int64(len(body))),
		ContentType:               aws.String(contentType(key)),
		ObjectLockMode:            types.ObjectLockMode(strings.ToUpper(u.Mode)),
		ObjectLockRetainUntilDate: aws.Time(until),
		// A PUT with Object Lock parameters must carry a checksum.
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
	})
	if err != nil {
		return fmt.Errorf("put %s with object lock %s until %s: %w", u.prefix+key, u.Mode, until.Format(time.RFC3339), describe(err))
	}
	return nil
}

// String implements report.Uploader.
func (u *LockedUploader) String() string {
	return fmt.Sprintf("%s (object lock %s, %dd)", u.Source.String(), u.Mode, u.Days)
}
