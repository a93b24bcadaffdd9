package main

import (
	"testing"

	"github.com/backupverify/backupverify/internal/testenv"
)

// The spare clusters drills leave in a scratch_dir that outlives the tests go.
func TestMain(m *testing.M) { testenv.Main(m) }
