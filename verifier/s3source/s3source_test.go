package s3source_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier/s3source"
	"github.com/backupverify/backupverify/verifier/sourcetest"
)

// TestConformance runs the Source suite against a real versitygw, through
// its fault proxy (which injects nothing here), one bucket per subtest.
func TestConformance(t *testing.T) {
	s3 := testenv.StartS3(t)
	client, err := s3source.NewClient(t.Context(), s3source.ClientOptions{
		Region: "us-east-1", Endpoint: s3.Endpoint, PathStyle: true,
		MaxAttempts: 2, ReadTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	sourcetest.RunSuite(t, func(t *testing.T) sourcetest.Store {
		bucket := fmt.Sprintf("conform-%d", n.Add(1))
		s3.CreateBucket(t, bucket)
		const prefix = "prod/db/"
		return sourcetest.Store{
			Source: client.Source(bucket, prefix),
			Put: func(t *testing.T, key string, b []byte) {
				s3.Put(t, bucket, prefix+key, b, testenv.PutOptions{})
			},
			PutOutside: func(t *testing.T, name string, b []byte) {
				s3.Put(t, bucket, "prod/db-other/"+name, b, testenv.PutOptions{})
				s3.Put(t, bucket, "prod/"+name, b, testenv.PutOptions{})
				s3.Put(t, bucket, name, b, testenv.PutOptions{})
			},
		}
	})
}

// TestFolderMarkersAreNotListed: consoles and some tools create "folder/"
// objects of size 0; they are not backups, nor is the prefix's own marker.
func TestFolderMarkersAreNotListed(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "markers")
	for _, k := range []string{"db/", "db/2026/", "db/2026/a.dump"} {
		s3.Put(t, "markers", k, nil, testenv.PutOptions{})
	}
	src, err := s3source.New(t.Context(), s3source.Options{Bucket: "markers", Prefix: "db/",
		ClientOptions: s3source.ClientOptions{Region: "us-east-1", Endpoint: s3.Endpoint, PathStyle: true}})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := src.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "2026/a.dump" {
		t.Fatalf("listed %+v, want only 2026/a.dump", objs)
	}
}
