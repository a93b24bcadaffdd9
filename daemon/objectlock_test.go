package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier"
)

// TestReportsUploadedUnderObjectLock: with reports.object_lock, each copy
// uploaded to versitygw carries the retention asked for, and cannot be
// deleted before its date.
func TestReportsUploadedUnderObjectLock(t *testing.T) {
	s := testenv.StartS3(t)
	ctx := context.Background()
	if _, err := s.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("audit"), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := config.Parse([]byte(fmt.Sprintf(`state_dir: %s
s3: {endpoint: %s, path_style: true}
reports:
  upload: s3://audit/drills/
  object_lock: {mode: compliance, days: 30}
targets:
  - {name: crm, source: "file://%s/"}
`, dir, s.Endpoint, dir)), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st, err := NewReportStore(ctx, c, testLog(t), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	r := verifier.DrillResult{Target: "crm", Started: now.Add(-time.Minute), Ended: now, OK: true}
	p, _, err := st.Write(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".json", ".md"} {
		key := "drills/crm/" + filepath.Base(p.Name) + ext
		ret, err := s.Client.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("audit"), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("retention of %s: %v", key, err)
		}
		want := now.Add(30 * 24 * time.Hour)
		if ret.Retention.Mode != types.ObjectLockRetentionModeCompliance || ret.Retention.RetainUntilDate.Sub(want).Abs() > time.Minute {
			t.Errorf("%s: retention %s until %s, want COMPLIANCE until %s", key, ret.Retention.Mode, ret.Retention.RetainUntilDate, want)
		}
		if _, err := s.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("audit"), Key: aws.String(key)}); err == nil ||
			!strings.Contains(err.Error(), "object lock") {
			t.Errorf("delete %s under compliance retention: %v, want refused by the object lock", key, err)
		}
	}
}
