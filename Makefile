GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X github.com/prometheus/common/version.Version=$(VERSION) -X github.com/prometheus/common/version.Revision=$(REVISION)
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: all build test deps lint fuzz quickstart bench bench-verify bench-drill bench-scale generate soak clean

all: build

## build: the binary, with version and revision stamped into build_info
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/backupverify ./cmd/backupverify

## test: install what the tests need, then lint and run every test (real PostgreSQL, S3, Prometheus,
## Chromium), and the deploy module's checks of rules, manifests, unit and dashboard
test: deps lint
	$(GO) test -race -count=1 -timeout 20m ./...
	cd deploy && $(GO) test -count=1 -timeout 10m ./...
	$(MAKE) fuzz

# Each fuzz target, its package and its committed seed corpus (testdata/fuzz/).
FUZZ_TARGETS := FuzzArchiveHeader:./verifier FuzzFindSum:./verifier \
	FuzzParse:./config FuzzGlob:./config \
	FuzzRestrictFilter:./verifier/pgscratch FuzzParseRestoreErrors:./verifier/pgscratch \
	FuzzRead:./verifier/pgdump FuzzInflate:./verifier/pgdump FuzzParseListPage:./verifier/s3source
FUZZTIME ?= 3s

## fuzz: run each fuzz target for FUZZTIME (3s) beyond its seed corpus; a crasher is written to testdata/fuzz/
## (a bare deadline failure of Go's fuzzing engine, golang/go#75804, is tried once more: scripts/fuzz.sh)
fuzz:
	GO=$(GO) ./scripts/fuzz.sh $(FUZZTIME) $(FUZZ_TARGETS)

## deps: PostgreSQL, Prometheus/promtool and versitygw, where missing
deps:
	./scripts/install-test-deps.sh

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

## lint: gofmt, go mod tidy, go vet and staticcheck, in both modules
lint:
	@fmt="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	$(GO) mod tidy -diff
	cd deploy && $(GO) mod tidy -diff
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd deploy && $(GO) run $(STATICCHECK) ./...

## quickstart: a sample database, backups of it every few minutes, and the daemon watching them
## (flags: make quickstart QUICKSTART_FLAGS='--rows 500 --listen 127.0.0.1:9900')
## Built, then run: `go run` exits 1 after Ctrl-C whatever its program returns (golang/go#40467).
QUICKSTART_BIN ?= bin/backupverify-quickstart
quickstart:
	CGO_ENABLED=0 $(GO) build -o $(QUICKSTART_BIN) ./cmd/backupverify-quickstart
	$(QUICKSTART_BIN) $(QUICKSTART_FLAGS)

## bench: one table: the drill against the manual sequence, the verify pass against
## pg_restore -f /dev/null, peak RSS at two dump sizes, and the 1,000-target scale run
bench: deps
	./scripts/bench.sh

## bench-verify: verify-pass benchmark of a ~1 GiB dump on the local S3 server, against its baselines
bench-verify: deps
	./scripts/bench-verify.sh

## bench-scale: 1,000 S3 targets in one daemon: time to all verified, steady CPU, peak RSS, scrape
bench-scale: deps
	$(GO) test -run '^$$' -bench BenchmarkScale -benchtime 1x -timeout 30m ./cmd/backupverify/

## generate: alerts.yaml and deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.in.yaml,
## with JOB (the scrape job's name, default backupverify) in BackupVerifyDown/Absent
JOB ?= backupverify
generate:
	JOB='$(JOB)' ./scripts/gen-alerts.sh

## bench-drill: drill RTO and phase times of a ~1 GiB dump with jobs 1 and 4
bench-drill: deps
	./scripts/bench-drill.sh

## soak: the simulated day of faults (issue 11) for SOAK_DURATION (default 60m); prints the table.
## `make test` runs its short form (every fault once, under 5 minutes).
SOAK_DURATION ?= 60m
soak: deps
	SOAK_DURATION=$(SOAK_DURATION) ./scripts/soak.sh

clean:
	rm -rf bin quickstart-data
