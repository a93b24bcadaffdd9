package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backupverify/backupverify/config"
	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/metrics"
	"github.com/backupverify/backupverify/verifier/s3source"
)

// TestManyTargetsBoundedVerification starts a daemon with 200 S3 targets, one
// real custom-format backup each: every one is verified, and never more than
// verify.max_concurrent backups are read at once (the proxy in front of the
// S3 server counts the GETs it answers at once). `make bench-scale` times
// the same with 1,000 targets.
func TestManyTargetsBoundedVerification(t *testing.T) {
	const n, limit = 200, 3
	fx := makeFixtures(t)
	s := testenv.StartS3(t)
	s.CreateBucket(t, "many")
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "listen: 127.0.0.1:0\nstate_dir: %s/state\nverify: {max_concurrent: %d}\ns3: {endpoint: %q, path_style: true}\ntargets:\n",
		dir, limit, s.Endpoint)
	man := manifest(map[string][]byte{"backup.dump": fx.custom})
	for i := range n {
		name := fmt.Sprintf("t%03d", i)
		fmt.Fprintf(&cfg, "  - {name: %s, source: \"s3://many/%s/\", checksum: manifest}\n", name, name)
		s.Put(t, "many", name+"/2026-01-01T0000Z/backup.dump", fx.custom, testenv.PutOptions{})
		s.Put(t, "many", name+"/2026-01-01T0000Z/CHECKSUM", man, testenv.PutOptions{})
	}
	path := filepath.Join(dir, "c.yml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{ConfigPath: path, Log: testLog(t), Build: metrics.BuildInfo{Version: "t", Revision: "r"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	testenv.Eventually(t, "every target verified", 5*time.Minute, func() bool {
		st := d.Statuses()
		if len(st) != n {
			return false
		}
		for _, s := range st {
			if s.LastResult == nil {
				return false
			}
			if !s.LastResult.OK {
				t.Fatalf("%s: %s: %s", s.Target, s.LastResult.Reason, s.LastResult.Error)
			}
		}
		return true
	})
	if most := s.Proxy.MostGetsAtOnce(); most > limit || most < 1 {
		t.Errorf("at most %d object GETs at once, want 1..%d (verify.max_concurrent)", most, limit)
	}
}

// Every S3 source of a configuration shares one client, and so does the
// report upload; other client options get their own.
func TestOneS3ClientPerStore(t *testing.T) {
	c := config.Default()
	c.S3.Endpoint = "http://127.0.0.1:9"
	var sc s3Clients
	ctx := context.Background()
	a, err := sc.source(ctx, c, "s3://bucket-a/x/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := sc.source(ctx, c, "s3://bucket-b/")
	up, _ := sc.get(ctx, c)
	if a.(*s3source.Source).Client() != b.(*s3source.Source).Client() || up != a.(*s3source.Source).Client() {
		t.Error("two buckets of one store got two clients")
	}
	other := *c
	other.S3.Region = "eu-west-1"
	o, _ := sc.source(ctx, &other, "s3://bucket-a/x/")
	if o.(*s3source.Source).Client() == a.(*s3source.Source).Client() {
		t.Error("another region shares the client")
	}
}
