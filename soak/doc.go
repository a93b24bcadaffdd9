// Package soak is a simulated day of faults, end to end: the backupverify
// binary watches a versitygw bucket through a fault-injecting proxy and
// drills into embedded scratch clusters; a real Prometheus scrapes it every
// second and evaluates the shipped alerts.yaml every second; a driver takes
// backups of a throwaway PostgreSQL database and injects one fault per slot
// from a plan. For each fault the plan names the alerts that must go pending
// or firing, and every other alert must stay silent.
//
// `go test ./soak/` runs the short plan (every fault once, a few minutes);
// `make soak` runs the plan round and round for SOAK_DURATION (default 60m)
// and prints the table. The test is in soak_test.go; this package has no
// code of its own.
package soak
