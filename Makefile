# Herald: the two commands that matter are `make run` and `make test`.
BUILD ?= build
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60

.PHONY: all build deps run test unit integration asan tsan fuzz format clean check-format bench

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) -DHD_WERROR=ON $(CMAKE_FLAGS) >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j$(JOBS)

run:
	@scripts/deps.sh --run
	@$(MAKE) --no-print-directory $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j$(JOBS) --target heraldd herald_cli
	@scripts/run.sh

test: build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

unit: build
	@cd $(BUILD) && ctest --output-on-failure -L unit

integration: build
	@cd $(BUILD) && ctest --output-on-failure -L integration

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan: deps
	@cmake -S . -B build-asan -DHD_WERROR=ON -DHD_ASAN=ON -DHD_UBSAN=ON \
	  -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=8 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j$(JOBS)

# The threaded parts (the server, the integration suite) under ThreadSanitizer.
tsan: deps
	@cmake -S . -B build-tsan -DHD_WERROR=ON -DHD_TSAN=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-tsan -j$(JOBS)
	@cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -j$(JOBS)

fuzz: deps
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# The benchmark (docs/performance.md): heraldd vs Node ws, memory, routing,
# handshakes. QUICK=1 for a short smoke run.
bench: build
	@bench/run.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
