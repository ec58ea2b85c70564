# ferry — see README.md. `make run` and `make test` are the two commands a
# new user needs.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN      := bin

.PHONY: all build run test test-short vet lint fuzz bench bench-spine cross clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ferry ./cmd/ferry

# The gateway on the embedded demo config: demo sensors, a stand-in cloud
# that goes down every 20 s for 10 s, a health line every 5 s.
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

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }

# Fuzz each decoder for FUZZTIME; finds land in testdata/fuzz and become
# regression tests.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(FUZZTIME) ./event/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeMessage$$' -fuzztime $(FUZZTIME) ./uplink/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./gateway/config/

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./buffer/ ./event/ ./uplink/ ./gateway/rules/

# The spine's targets side by side with a Mosquitto edge bridge (see README).
bench-spine: build
	bash internal/bench/spine.sh

cross:
	for t in linux/arm/6 linux/arm/7 linux/arm64/ linux/amd64/; do \
	  os=$${t%%/*}; rest=$${t#*/}; arch=$${rest%%/*}; arm=$${rest#*/}; \
	  out=$(BIN)/ferry-$$os-$$arch$${arm:+v$$arm}; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/ferry || exit 1; \
	  ls -l $$out; \
	done

clean:
	rm -rf $(BIN) .ferry-data
