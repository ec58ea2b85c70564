# ferry — see README.md. `make run` and `make test` are the two commands a
# new user needs.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN      := bin

.PHONY: all build run test test-short test-abuse vet lint fuzz bench bench-spine bench-wear bench-wire bench-ingest cross deb test-deb test-arm clean FORCE

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ferry ./cmd/ferry

# The gateway on the embedded demo config: demo sensors, a stand-in cloud
# that is up for 20 s then down for 10 s (an outage every 30 s), a health
# line every 5 s.
run: build
	./$(BIN)/ferry run

# Everything, including the tests that need Mosquitto (CI installs it) and
# the fuzz corpora as regression tests.
test: vet
	$(GO) test -count=1 -timeout 12m ./...

# staticcheck, pinned; installed from the Go module proxy on first use.
STATICCHECK_VERSION ?= v0.8.2
lint: vet
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck ./...

test-short:
	$(GO) test -short -count=1 ./...

# Issue 12's attacks on the real binary (internal/abuse), one subtest per
# attack, each asserting ferry alive, peak RSS <= 64 MiB with the default
# budget, every reading a legitimate sensor got a PUBACK for at the cloud in
# order, and nothing the ACL denies delivered. Needs Mosquitto. About 2
# minutes on a 2-core VM (up to 6 when subtests fail: their waits run to
# the deadline); `make test` runs it too (not -short).
test-abuse:
	$(GO) test -count=1 -timeout 10m -v -run '^TestAbuse$$' ./internal/abuse/

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }

# Fuzz each decoder for FUZZTIME; finds land in testdata/fuzz and become
# regression tests.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(FUZZTIME) ./event/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeGap$$' -fuzztime $(FUZZTIME) ./buffer/
	$(GO) test -run '^$$' -fuzz '^FuzzRollupPayload$$' -fuzztime $(FUZZTIME) ./buffer/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeMessage$$' -fuzztime $(FUZZTIME) ./uplink/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEnvelopes$$' -fuzztime $(FUZZTIME) ./uplink/
	$(GO) test -run '^$$' -fuzz '^FuzzTopic$$' -fuzztime $(FUZZTIME) ./uplink/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./gateway/config/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./gateway/config/signed/
	$(GO) test -run '^$$' -fuzz '^FuzzOffer$$' -fuzztime $(FUZZTIME) ./gateway/remoteconfig/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./gateway/rules/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzSenML$$' -fuzztime $(FUZZTIME) ./gateway/rules/payload/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSketch$$' -fuzztime $(FUZZTIME) ./gateway/rules/window/
	$(GO) test -run '^$$' -fuzz '^FuzzWindowUnmarshalState$$' -fuzztime $(FUZZTIME) ./gateway/rules/window/
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./internal/keyring/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/keyring/
	$(GO) test -run '^$$' -fuzz '^FuzzAppendString$$' -fuzztime $(FUZZTIME) ./internal/audit/
	$(GO) test -run '^$$' -fuzz '^FuzzAppendQuoted$$' -fuzztime $(FUZZTIME) ./internal/jsonstr/
	$(GO) test -run '^$$' -fuzz '^FuzzGPIOOutCommand$$' -fuzztime $(FUZZTIME) ./drivers/
	$(GO) test -run '^$$' -fuzz '^FuzzMapTopic$$' -fuzztime $(FUZZTIME) ./downlink/
	$(GO) test -run '^$$' -fuzz '^FuzzFilters$$' -fuzztime $(FUZZTIME) ./downlink/
	$(GO) test -run '^$$' -fuzz '^FuzzWire$$' -fuzztime $(FUZZTIME) ./downlink/
	$(GO) test -run '^$$' -fuzz '^FuzzReply$$' -fuzztime $(FUZZTIME) ./downlink/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(FUZZTIME) ./verify/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeReply$$' -fuzztime $(FUZZTIME) ./verify/
	$(GO) test -run '^$$' -fuzz '^FuzzChecker$$' -fuzztime $(FUZZTIME) ./verify/

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./buffer/ ./event/ ./uplink/ ./gateway/rules/...

# The spine's targets side by side with a Mosquitto edge bridge (see README).
bench-spine: build
	bash internal/bench/spine.sh

# Ingest beside a Mosquitto bridge: stop-and-wait and 32-in-flight publishers,
# msgs/s and CPU per message, medians of 3 (README, "Performance").
bench-ingest: build
	bash internal/bench/ingest.sh

# SD-card wear: bytes the edge process writes to storage per acknowledged
# reading, ferry's durability modes beside a Mosquitto edge bridge, from
# /proc/PID/io (internal/bench/wear; settings: go run ./cmd/ferry-wear -h).
# About 12 minutes; QUICK=1 (10 s windows) about 4. go run, not bin/: two
# runs at once must not overwrite each other's harness binary (each run
# also measures its own copy of bin/ferry).
bench-wear: build
	PATH="$$PATH:/usr/sbin" $(GO) run ./cmd/ferry-wear -ferry $(BIN)/ferry

# Bytes on the wire per sensor reading, MQTT and TLS framing included, for
# each cloud message form (JSON single and batched, CBOR and SenML-CBOR
# batched, each plain and zstd): 10 sensors × 3 quantities every 10 s
# through the real uplink to Mosquitto over TCP and TLS, counted at a TCP
# proxy (internal/bench/wire; README, "Wire size"). WIRE_PERIODS=360 is an
# hour of readings (simulated time: about a minute); `make test` runs 6.
WIRE_PERIODS ?= 360
bench-wire:
	WIRE_PERIODS=$(WIRE_PERIODS) $(GO) test -count=1 -v -run '^TestWireSize$$' ./internal/bench/wire/

# ---- Builds for the boards ------------------------------------------------
#
# bin/ferry-linux-<variant>: static (CGO_ENABLED=0: no libc to match on the
# board), -trimpath, stripped (-s -w), version and commit stamped.
#   armv6  Pi Zero, Zero W, 1; also every later Pi on 32-bit Raspberry Pi OS
#   armv7  Pi 2, 3, 4 and other ARMv7 boards on a 32-bit OS
#   arm64  Pi 3, 4, 5, Zero 2 on a 64-bit OS; arm64 edge boxes
#   amd64  x86-64 edge boxes
CROSS_VARIANTS := armv6 armv7 arm64 amd64
goarch.armv6 := arm
goarm.armv6  := 6
goarch.armv7 := arm
goarm.armv7  := 7
goarch.arm64 := arm64
goarch.amd64 := amd64

cross: $(CROSS_VARIANTS:%=$(BIN)/ferry-linux-%)
	@for f in $^; do stat -c '%n %s' $$f; done | awk '{ printf "%-24s %9d bytes  %5.1f MiB\n", $$1, $$2, $$2 / 1048576 }'

# FORCE: the go command's cache decides what is stale, not make.
$(BIN)/ferry-linux-%: FORCE
	$(if $(goarch.$*),,$(error unknown build variant "$*"; known: $(CROSS_VARIANTS)))
	CGO_ENABLED=0 GOOS=linux GOARCH=$(goarch.$*) GOARM=$(goarm.$*) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/ferry

FORCE:

# ---- Debian packages --------------------------------------------------------
#
# bin/ferry_<debversion>_{armhf,arm64,amd64}.deb (deploy/deb/build.sh has
# the layout). armhf gets the ARMv6 build: Raspberry Pi OS's armhf userland
# runs on the ARMv6 Pi Zero and 1, and an ARMv6 binary runs on every later
# Pi and on Debian's ARMv7 armhf too, so one armhf package fits all.
DEB_VERSION = $(shell sh deploy/deb/build.sh --debian-version '$(VERSION)')
deb.armhf := armv6
deb.arm64 := arm64
deb.amd64 := amd64
DEB_ARCHES := armhf arm64 amd64

deb: $(foreach a,$(DEB_ARCHES),$(BIN)/ferry-linux-$(deb.$(a)))
	rm -f $(BIN)/ferry_*.deb
	sh deploy/deb/build.sh $(BIN) '$(VERSION)' $(foreach a,$(DEB_ARCHES),$(a)=$(BIN)/ferry-linux-$(deb.$(a)))

# The package for this machine, checked by deploy/deb_test.go: layout,
# modes, control fields, conffiles, the binary and config it installs, the
# unit (systemd-analyze), and install, upgrade, remove and purge through
# the maintainer scripts in a scratch root (dpkg --root).
DEB_HOST_ARCH = $(patsubst arm,armhf,$(shell $(GO) env GOARCH))
test-deb: deb
	FERRY_DEB=$(abspath $(BIN)/ferry_$(DEB_VERSION)_$(DEB_HOST_ARCH).deb) $(GO) test -count=1 -run '^TestDeb' ./deploy/

# ---- Tests on ARM, under emulation -----------------------------------------
#
# Every package's tests, cross-compiled for arm64 and for 32-bit ARMv6 (the
# Pi Zero: 32-bit pointers, ints and mmap sizes in bbolt, 64-bit atomics
# that must be 8-byte aligned; and, on both, float results that may differ
# from amd64's in the last bit: fused multiply-add on arm64, assembly math
# functions only on amd64), run under Debian's qemu-user-static, invoked
# explicitly (no binfmt_misc needed), each from its package's directory as
# go test would. ARM_TEST_JOBS binaries run at once (both architectures
# mixed): they mostly wait on fsync and timers. On a 2-core machine it
# takes about 5 minutes (README, "Builds and packages").
# Mosquitto and mosquitto_pub/sub are the host's x86 binaries: the tests
# start them as separate processes, which qemu-user runs natively.
#
# Not run under emulation (ARM_SKIP), because they cannot work under
# qemu-user or would not test ARM code:
#   buffer.TestKill9, buffer.TestFairKill9, buffer.TestUsageKill9
#       re-execute their own test binary
#       (os.Args[0]) as the child it SIGKILLs: an ARM binary the kernel
#       cannot start without binfmt_misc.
#   gateway.TestCrashKill9, gateway.TestPipelineCrashExactlyOnce,
#   gateway.TestKillAfterAcks, gateway.TestPowerCut, gateway.TestStorageFaults
#   (these two also need FUSE),
#   gateway.TestSystemdNotifyAndReload, abuse.TestAbuse
#       `go build` ferry and run it: that builds and runs an amd64 ferry,
#       so they would test the host's code (for minutes, in the first two).
#   gateway.TestMetricsEndpoint          wants process_resident_memory_bytes
#       > 0, read from /proc/self/stat, which qemu-user (7.2) fakes with
#       zeros for RSS and VSZ.
#   broker.TestConcurrentLogins          starts 20 mosquitto_pub processes at
#       once; under Debian 12's qemu-user 7.2 a fork/exec from the emulated
#       process can hang (golang/go#68976, #69259): seen in CI, a child
#       stuck in forkExec for 10 minutes. The login code it covers runs
#       under emulation in the other broker tests, one client at a time.
#   gateway.TestDemoWatcherSeesReplays   the demo and the README's watcher
#       command on loopback, a host experience; under emulation on a loaded
#       machine the stand-in cloud (mochi) was seen to lose one queued
#       message of a reconnecting persistent session (issue 13).
# and the packages ./deploy (packaging; host tools only) and
# ./internal/fleet with ./internal/natstest (the fleet test `go build`s
# ferry and runs 20 of it into a NATS cluster: host code only, and the
# harness's own cluster test starts host nats-server processes).
ARM_VARIANTS     ?= arm64 armv6
ARM_TEST_JOBS    ?= 3
# A hang detector: the ARMv6 gateway package takes 2–6 min under load.
ARM_TEST_TIMEOUT ?= 10m
ARM_TEST_DIR     := $(BIN)/test-arm
ARM_SKIP         := ^(TestKill9|TestFairKill9|TestUsageKill9|TestCrashKill9|TestPipelineCrashExactlyOnce|TestKillAfterAcks|TestPowerCut|TestStorageFaults|TestSystemdNotifyAndReload|TestMetricsEndpoint|TestDemoWatcherSeesReplays|TestConcurrentLogins|TestAbuse)$$
ARM_SKIP_PKGS    := github.com/ferrygw/ferry/deploy github.com/ferrygw/ferry/internal/fleet github.com/ferrygw/ferry/internal/natstest
# Started first, so the long ones do not end up running alone at the end.
ARM_SLOW_FIRST   := buffer gateway rules broker
qemu.arm64 := qemu-aarch64-static
qemu.armv6 := qemu-arm-static
empty :=
space := $(empty) $(empty)

test-arm:
	@for q in $(foreach v,$(ARM_VARIANTS),$(qemu.$(v))); do command -v $$q >/dev/null || { echo "test-arm: $$q missing: apt-get install qemu-user-static" >&2; exit 1; }; done
	rm -rf $(ARM_TEST_DIR) && mkdir -p $(ARM_TEST_DIR)
	$(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' ./... | grep -v -E '^($(subst $(space),|,$(ARM_SKIP_PKGS))) ' >$(ARM_TEST_DIR)/pkgs
	@# One go test -c per architecture builds all packages in parallel into
	@# DIR/<last path element>.test (it refuses two packages of one name).
	$(foreach v,$(ARM_VARIANTS),CGO_ENABLED=0 GOOS=linux GOARCH=$(goarch.$(v)) GOARM=$(goarm.$(v)) $(GO) test -c -vet=off -o $(ARM_TEST_DIR)/$(v)/ $$(cut -d' ' -f1 $(ARM_TEST_DIR)/pkgs) &&) true
	{ $(foreach v,$(ARM_VARIANTS),while read -r pkg dir; do echo "$(qemu.$(v)) $(v) $${pkg##*/} $$dir"; done <$(ARM_TEST_DIR)/pkgs;) } \
	  | awk -v slow='$(ARM_SLOW_FIRST)' 'BEGIN { n = split(slow, s, " "); for (i = 1; i <= n; i++) r[s[i]] = i } { print ($$3 in r ? r[$$3] : 99), $$0 }' \
	  | sort -s -n -k1,1 | cut -d' ' -f2- >$(ARM_TEST_DIR)/jobs
	@start=$$(date +%s); \
	ARM_SKIP='$(ARM_SKIP)' xargs -P $(ARM_TEST_JOBS) -L 1 sh -c ' \
	  log=$(abspath $(ARM_TEST_DIR))/$$1/$$2.log; t0=$$(date +%s); \
	  if (cd "$$3" && exec "$$0" $(abspath $(ARM_TEST_DIR))/$$1/$$2.test -test.count=1 -test.timeout=$(ARM_TEST_TIMEOUT) -test.skip "$$ARM_SKIP") >"$$log" 2>&1; \
	  then echo "ok    $$1 $$2 $$(( $$(date +%s) - t0 ))s"; \
	  else echo "FAIL  $$1 $$2 $$(( $$(date +%s) - t0 ))s  ($$log)"; exit 1; fi' <$(ARM_TEST_DIR)/jobs; \
	rc=$$?; echo "test-arm: $(ARM_VARIANTS) in $$(( $$(date +%s) - start ))s"; \
	if [ $$rc -ne 0 ]; then \
	  for f in $(ARM_TEST_DIR)/*/*.log; do grep -q -E '^(FAIL|panic:)' $$f && { echo "==== $$f"; grep -E -B1 -A15 -e '^(--- FAIL|panic:|FAIL)' $$f | head -n 80; }; done; \
	  echo "test-arm: FAILED" >&2; exit 1; fi

clean:
	rm -rf $(BIN) .ferry-data
