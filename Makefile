# cork: host controller (cork) and guest agent (corkd).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
HOSTARCH := $(shell $(GO) env GOARCH)

# The one command line that builds a release binary: static, reproducible
# paths, the version stamped in (main.stamp is corkd's, which cork bake
# reads from the binary). images/Dockerfile uses the same one.
GOBUILD = CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION) -X main.stamp=corkd-version:$(VERSION);"

CORKD_TARGETS = bin/linux-amd64/corkd bin/linux-arm64/corkd
CORK_TARGETS  = bin/linux-amd64/cork bin/linux-arm64/cork bin/darwin-arm64/cork

.PHONY: all test demo clean FORCE

all: $(CORKD_TARGETS) $(CORK_TARGETS)

bin/%/corkd: FORCE
	GOOS=$(word 1,$(subst -, ,$*)) GOARCH=$(word 2,$(subst -, ,$*)) $(GOBUILD) -o $@ ./guest/cmd/corkd

bin/%/cork: FORCE
	GOOS=$(word 1,$(subst -, ,$*)) GOARCH=$(word 2,$(subst -, ,$*)) $(GOBUILD) -o $@ ./host/cmd/cork

FORCE:

# The static checks' versions are pinned here; go run fetches them through
# the module proxy without adding them to go.mod.
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    = $(GO) run golang.org/x/tools/cmd/deadcode@v0.52.0

# test also vets cork's macOS build and compiles its tests for macOS (they
# cannot run here: -exec true stands in for running them).
test: check
	GOOS=darwin GOARCH=arm64 $(GO) vet ./host/... ./protocol/...
	GOOS=darwin GOARCH=arm64 $(GO) test -count=1 -exec true ./host/... ./protocol/... >/dev/null
	$(GO) test -race -count=1 ./...

# check is the static part of test: formatting, go mod tidy, vet,
# staticcheck (every check) and no unreachable code outside tests.
.PHONY: check
check:
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(STATICCHECK) -checks all ./...
	@out=$$($(DEADCODE) -test ./...); test -z "$$out" || { echo "unreachable code:"; echo "$$out"; exit 1; }

# demo starts corkd on a temporary unix socket on this machine and opens an
# interactive shell through it. Drag the terminal and run `stty size`.
demo: bin/linux-$(HOSTARCH)/corkd bin/linux-$(HOSTARCH)/cork
	@dir=$$(mktemp -d); \
	bin/linux-$(HOSTARCH)/corkd serve --listen unix://$$dir/corkd.sock 2>$$dir/corkd.log & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; rm -rf $$dir' EXIT; \
	for i in $$(seq 50); do [ -S $$dir/corkd.sock ] && break; sleep 0.1; done; \
	echo "corkd (pid $$pid) on unix://$$dir/corkd.sock; log in $$dir/corkd.log. Exit the shell to stop."; \
	bin/linux-$(HOSTARCH)/cork exec -it --connect unix://$$dir/corkd.sock -- $${SHELL:-/bin/sh}

clean:
	rm -rf bin

# The test VM: Debian's kernel, busybox and corkd, booted under QEMU.
TESTVM = bin/testvm
QEMU_ACCEL ?= tcg

.PHONY: vm-image vm-test vm-demo
vm-image: bin/linux-amd64/corkd
	images/testvm/build.sh $(TESTVM) bin/linux-amd64/corkd

vm-test: vm-image
	CORK_TESTVM=$(abspath $(TESTVM)) QEMU_ACCEL=$(QEMU_ACCEL) $(GO) test -count=1 -v -run TestVM ./images/testvm/

# vm-demo boots the VM and opens a shell in it as node through cork exec -it
# over the virtio-serial port. Drag your terminal and run stty size.
vm-demo: vm-image bin/linux-amd64/cork
	@dir=$$(mktemp -d); \
	QEMU_ACCEL=$(QEMU_ACCEL) timeout 3600 images/testvm/run-vm $(TESTVM) demo $$dir/serial.sock \
		</dev/null >$$dir/console.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; rm -rf $$dir' EXIT; \
	for i in $$(seq 300); do grep -q "VMCHECK READY" $$dir/console.log 2>/dev/null && break; sleep 0.1; done; \
	echo "VM up (QEMU pid $$pid, console in $$dir/console.log). Exit the shell to stop it."; \
	bin/linux-amd64/cork exec -it -u node --connect unix://$$dir/serial.sock -- /bin/sh -l

# bench measures resize latency, throughput, start-up and footprint, side
# by side with the floor and the fork-per-resize workaround; the README's
# table is its output. BENCH_FLAGS=-only=forward runs one section.
.PHONY: bench
bench:
	$(GO) run ./host/e2e/bench -v $(BENCH_FLAGS)

# fuzz runs every fuzz target of the protocol for FUZZTIME each. A count
# (Nx), not a duration: with a duration Go 1.26's fuzzing coordinator can
# report its own deadline as a failure (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 300000x
FUZZ_PKGS = protocol guest/screen
.PHONY: fuzz
fuzz:
	@for p in $(FUZZ_PKGS); do \
		for t in $$(grep -ho '^func Fuzz[A-Za-z]*' $$p/*_test.go | cut -c6-); do \
			echo "fuzz $$p $$t, $(FUZZTIME) executions"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./$$p/ >/tmp/cork-fuzz.log 2>&1 || { cat /tmp/cork-fuzz.log; exit 1; }; \
		done; \
	done

# chaos attacks one corkd from a non-root uid it admits while root's kept
# session must go on, and fails naming each bound that broke. It needs
# root (it creates a user). CHAOS_ARGS sets its size, for example
# CHAOS_ARGS="-conns 2000 -duration 40s"; -h lists the flags and bounds.
CHAOS_ARGS ?=
.PHONY: chaos
chaos:
	$(GO) run ./host/e2e/chaos $(CHAOS_ARGS)

# soak is the long form of TestSoak: 64 sessions, 8 MiB each way each.
.PHONY: soak
soak:
	CORK_SOAK=long $(GO) test -count=1 -v -run 'TestSoak$$' -timeout 20m ./host/e2e/
