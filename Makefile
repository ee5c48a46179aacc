# kvd — convenience entry points. The build itself is CMake (build/).
#
#   make test            install deps, Debug+ASan+UBSan build, every test
#   make build           the same build without running tests
#   make release         optimised build in build-release/ (benchmarks)
#   make run             a local three-member TLS cluster (Ctrl-C stops it)
#   make fuzz T=fuzz_json SECONDS=300   run one libFuzzer target
#   make fuzz-all SECONDS=600           run every libFuzzer target in turn
#   make clean

SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
T ?= fuzz_json
SECONDS ?= 60

.PHONY: all test build release deps fuzz fuzz-all clean run

all: build

deps:
	scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Debug -DKV_SANITIZE=ON -DKV_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

test: build
	scripts/run-tests.sh $(BUILD)

release: deps
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DKV_SANITIZE=OFF >/dev/null
	cmake --build build-release -j$(JOBS)

run:
	scripts/run-cluster.sh

fuzz: deps
	scripts/fuzz.sh $(T) $(SECONDS)

fuzz-all: deps
	scripts/fuzz.sh all $(SECONDS)

clean:
	rm -rf $(BUILD) build-release build-fuzz
