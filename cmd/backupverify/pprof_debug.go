//go:build pprofdebug

package main

// Built with -tags pprofdebug, the binary serves net/http/pprof on
// $BACKUPVERIFY_PPROF_ADDR (a loopback address) for profiling the daemon;
// release builds leave it out.

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("BACKUPVERIFY_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
