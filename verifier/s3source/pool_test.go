package s3source_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/backupverify/backupverify/internal/testenv"
	"github.com/backupverify/backupverify/verifier/s3source"
)

// countingForwarder accepts TCP connections on loopback and copies each to
// target, counting the connections accepted.
type countingForwarder struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startForwarder(t *testing.T, target string) *countingForwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &countingForwarder{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				_, _ = io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return f
}

// TestListsReuseConnections: a daemon's targets share one client, and their
// polls, many at once, list through it again and again. Each round of
// listings must go over the connections earlier rounds opened, not over new
// ones: dialling a connection per listing costs more CPU than the listing.
func TestListsReuseConnections(t *testing.T) {
	s3 := testenv.StartS3(t)
	s3.CreateBucket(t, "pool")
	const targets = 32
	for i := range targets {
		s3.Put(t, "pool", fmt.Sprintf("t%02d/2026-01-01T0000Z/backup.dump", i), []byte("x"), testenv.PutOptions{})
	}
	fw := startForwarder(t, strings.TrimPrefix(s3.Direct, "http://"))
	client, err := s3source.NewClient(t.Context(), s3source.ClientOptions{
		Region: "us-east-1", Endpoint: "http://" + fw.ln.Addr().String(), PathStyle: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	round := func() {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				src := client.Source("pool", fmt.Sprintf("t%02d/", i))
				objs, err := src.List(t.Context())
				if err != nil || len(objs) != 1 {
					t.Errorf("list %s: %v %v", src, objs, err)
				}
			}()
		}
		close(start)
		wg.Wait()
	}
	const rounds = 6
	for range rounds {
		round()
	}
	// No more connections than listings at once: none was closed and
	// re-dialled between rounds.
	if got := fw.accepted.Load(); got > targets {
		t.Errorf("%d rounds of %d listings at once opened %d connections; want at most %d", rounds, targets, got, targets)
	}
}
