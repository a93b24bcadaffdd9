package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/backupverify/backupverify/internal/testenv"
)

// TestReportsUploadAndStateAfterRestart: each drill's report is copied to
// reports.upload on the real S3 server; a restarted daemon shows the last
// drill from state, not zeros.
func TestReportsUploadAndStateAfterRestart(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.CreateSample(t, "crm", 100)
	s := testenv.StartS3(t)
	s.CreateBucket(t, "audit-reports")
	dir := t.TempDir()
	putBackup(t, filepath.Join(dir, "b"), "db.dump", dumpBytes(t, pg, "crm", "c"))
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
state_dir: %s/state
s3: {endpoint: "%s", path_style: true}
reports: {upload: "s3://audit-reports/backupverify/"}
targets:
  - name: crm
    source: file://%s/b/
    rto: 10m
`, dir, s.Endpoint, dir)
	d, base, stop := runDaemon(t, yaml)
	t.Cleanup(stop)
	d.sched.RunNow("crm", "test")
	waitUntil(t, "the drill", 60*time.Second, func() bool {
		return scrapeURL(t, base+"/metrics")[`backupverify_drill_success{target="crm"}`] == 1
	})
	var keys []string
	waitUntil(t, "the uploaded report", 20*time.Second, func() bool {
		out, err := s.Client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("audit-reports")})
		if err != nil {
			t.Fatal(err)
		}
		keys = keys[:0]
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
		return len(keys) == 2
	})
	sort.Strings(keys)
	if !strings.HasPrefix(keys[0], "backupverify/crm/") || !strings.HasSuffix(keys[0], ".json") || !strings.HasSuffix(keys[1], ".md") {
		t.Errorf("uploaded keys %v", keys)
	}
	before := scrapeURL(t, base+"/metrics")

	// The daemon restarted on the same state, before it runs any drill.
	stop()
	_, base2 := startDaemon(t, strings.Replace(yaml, "reports: {upload", "reports: {retention: 400d, upload", 1))
	after := scrapeURL(t, base2+"/metrics")
	for _, series := range []string{`backupverify_drill_success{target="crm"}`, `backupverify_rto_seconds{target="crm"}`,
		`backupverify_drill_last_success_timestamp_seconds{target="crm"}`, `backupverify_drill_backup_timestamp_seconds{target="crm"}`,
		`backupverify_drill_phase_seconds{phase="restore",target="crm"}`} {
		if after[series] == 0 || after[series] != before[series] {
			t.Errorf("after a restart %s = %v, before %v", series, after[series], before[series])
		}
	}
	_, _, page := get(t, base2+"/")
	if !strings.Contains(page, "PASS") || !strings.Contains(page, "latest") {
		t.Error("after a restart the status page does not show the last drill")
	}
}
