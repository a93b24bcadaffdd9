// Command backupverify proves, continuously, that PostgreSQL backups can be restored.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// A second signal kills at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// Exit codes of SPEC §2.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitTrouble = 1
)

// usageError is a bad command line or configuration: exit 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// failedError says a check ran and found a problem: exit 1, already reported.
type failedError struct{ msg string }

func (f failedError) Error() string { return f.msg }

func exitCode(err error, stderr io.Writer) int {
	var u usageError
	var f failedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &f):
		return exitFailed
	case errors.As(err, &u):
		fmt.Fprintln(stderr, "backupverify:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "backupverify:", err)
		return exitTrouble
	}
}
