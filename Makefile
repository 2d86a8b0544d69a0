# A thin wrapper around CMake and ctest. The two commands a new machine needs:
#   make run    install what is missing, build, start tcpgate on apidefs/examples/
#   make test   install what is missing, build, run every test (also under ASan/UBSan),
#               and a short run of every fuzz target

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build build-asan build-fuzz run test test-fast fuzz fuzz-smoke format \
	check-format clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j$(JOBS)

build-asan: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DTCPGATE_SANITIZE=ON
	cmake --build $(BUILD_ASAN) -j$(JOBS)

# The libFuzzer targets of tests/fuzz, with clang, ASan and UBSan. A build of
# its own: every object is instrumented for the fuzzer.
build-fuzz: deps
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DTCPGATE_FUZZ=ON -DTCPGATE_TESTS=OFF
	cmake --build $(BUILD_FUZZ) -j$(JOBS)

run: build
	@scripts/run-examples.sh $(BUILD)/tcpgate

# The whole suite twice: the optimised build, then under AddressSanitizer and
# UndefinedBehaviorSanitizer; then every fuzz target for a few seconds.
test: build build-asan build-fuzz check-format
	cd $(BUILD) && ctest --output-on-failure -j1
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j1
	@$(MAKE) --no-print-directory fuzz-smoke

# The optimised build's suite only, for a quick loop while editing.
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j1

SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

format:
	clang-format -i $(SOURCES)

check-format:
	@out=$$(clang-format --dry-run $(SOURCES) 2>&1); \
	if [ -n "$$out" ]; then echo "$$out" | head -20; \
		echo "sources are not formatted: run 'make format'"; exit 1; fi

# Each fuzz target in turn, FUZZ_SECONDS each (FUZZ_TARGETS="proxyproto
# clienthello" for some), on a scratch copy of tests/fuzz/corpus/<target>;
# a table of executions at the end. What a failure leaves is in
# tests/fuzz/README.md.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?=
fuzz: build-fuzz
	tests/fuzz/run.sh $(BUILD_FUZZ) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Every fuzz target, about FUZZ_SMOKE_SECONDS in all: the checked-in corpus
# (seeds and past findings) replayed, then a short search. Part of make test.
FUZZ_SMOKE_SECONDS ?= 20
fuzz-smoke: build-fuzz
	tests/fuzz/run.sh $(BUILD_FUZZ) --total $(FUZZ_SMOKE_SECONDS)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)

# tcpgate against HAProxy and nginx on this machine (tests/bench/bench.py):
# a table, tests/bench/results/latest.json and latest.png. About 12 minutes;
# BENCH_QUICK=1 for a 2-minute smoke, BENCH_ROUNDS=N, BENCH_ONLY=1,5. Not a test.
.PHONY: bench
bench: build
	@scripts/deps.sh bench || echo "bench: going on without them; what needs them is skipped" >&2
	python3 tests/bench/bench.py --tcpgate $(BUILD)/tcpgate
