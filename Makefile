# dosqld — build.
#
#   make            build build/dosqld and build/dosql (runs ./configure first if config.mk is missing;
#                   as root on Debian, make deps)
#   make deps       install the missing Debian packages (./configure --missing), then ./configure;
#                   DEPS="bench" picks the groups (default: the daemon's, the shell's, the tests')
#   make run        build and start dosqld on 127.0.0.1:8787 (data in ./data); PORT= and DATA=
#                   choose another port and data directory
#   make test       build, then run every unit and integration test
#   make bench      benchmarks against peers (bench/; as root on Debian, make deps DEPS=bench
#                   first); QUICK=1: a short version of each driver; BASE=/path/to/dosqld:
#                   every workload also against that binary, interleaved, with the ratio
#                   new/base and a verdict beside the noise (docs/benchmarks.md)
#   make soak       30 minutes of mixed load on an ASan+UBSan build, watching memory and
#                   descriptors (SOAK_SECONDS; tests/soak/soak.mjs; the report in build-soak/)
#   make install    PREFIX, DESTDIR: binary, config, systemd unit, sysusers/tmpfiles
#   make fuzz       libFuzzer targets (tests/fuzz/fuzz_*.c) built with clang into
#                   build-fuzz/, each run FUZZ_SECONDS (default 60) from its corpus;
#                   FUZZ_TARGETS="http ws" picks some. Crashes go to build-fuzz/crashes/
#                   and make it fail. docs/testing.md says how to reproduce one.
#   make fuzz-build only build them; make fuzz-test runs each 5 s as make test does;
#                   make fuzz-corpus rewrites the storage targets' binary seeds
#   make clean
#
# SANITIZE=address,undefined builds into build-address-undefined/ with those
# sanitizers, for any target; it also checks the code's invariants
# (DSQ_ASSERT, common/check.h), as OPT=-O0 and CHECKS=1 do. WERROR=1 turns
# warnings into errors (CI). LTO=0: no link-time optimisation (on in the
# release build; a quicker link while working).
# V=1 shows the full commands.
#
# make test SANITIZE=... runs the whole suite, every unit, integration,
# crash and interop test, on that build; the harness fails a test on any
# sanitizer report at a daemon's exit. tests/run passes SANITIZE on to the
# tests: the one load-sized test scales down there (actors.test.mjs, 2,000
# databases instead of 10,000: at ~2.7 times the plain build's time a
# database, 10,000 would pass the 180 s a file has). Measured on the 2-core
# machine with a load average of 8-12 (others' work): .ci/run from clean
# build directories, both passes, 9 min 17 s; with the builds already made,
# make test 4 min 16 s and make test SANITIZE=address,undefined 5 min 50 s
# to 6 min 40 s. Timing-dependent checks wait for a condition, bounded,
# instead of sleeping a fixed time, so that they hold on such a machine and
# under the sanitizers alike.

.DEFAULT_GOAL := all

ifeq ($(filter clean deps,$(MAKECMDGOALS)),)
include config.mk
endif

# Root on Debian gets what is missing installed first (make deps);
# anyone else gets the apt-get line from ./configure.
ROOT_APT := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && echo yes)
config.mk: configure VERSION
ifeq ($(ROOT_APT),yes)
	$(Q)$(MAKE) --no-print-directory deps
else
	./configure
endif

# Install every missing Debian package (the daemon's, the shell's, the
# tests'; or those of the groups in DEPS, e.g. DEPS=bench), then configure.
DEPS ?=
deps:
	$(Q)need=$$(./configure --missing $(DEPS)); \
	if [ -n "$$need" ]; then \
	    echo "deps: installing $$need"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$need >/dev/null || \
	        { echo "deps: apt-get install $$need failed" >&2; exit 1; }; \
	fi
	./configure

comma := ,
ifeq ($(V),1)
Q :=
say := @true
else
Q := @
say := @printf '  %-6s %s\n'
endif
B := build$(if $(SANITIZE),-$(subst $(comma),-,$(SANITIZE)))

# FUZZ=1 (set by `make fuzz-build`, not by hand): the library again with
# clang and the fuzzer's coverage instrumentation, into build-fuzz/.
FUZZ_CC ?= clang
FUZZ_B := build-fuzz
ifeq ($(FUZZ),1)
override CC := $(FUZZ_CC)
override B := $(FUZZ_B)
override SANITIZE := fuzzer-no-link,address,undefined
override LTO := 0
endif

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wformat=2 -Wno-unused-parameter -Wvla
ifeq ($(WERROR),1)
WARN += -Werror
endif
OPT ?= -O2
SAN := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all)

# Hardening for a network daemon: stack protector, bounds-checked libc
# calls where the size is known (with optimisation, and not beside the
# sanitizers, which replace those calls), position-independent
# executables, and a read-only GOT bound at start.
HARDEN_CFLAGS := -fstack-protector-strong
HARDEN_LDFLAGS := -pie -Wl,-z,relro,-z,now

# Link-time optimisation in the release build; LTO=0 turns it off (a
# quicker link while working: the daemon's takes ~15 s with it). The code
# is in small files, one concern each, so the hot paths cross files at
# every step (a byte buffer's append, a WebSocket frame to a Cap'n Web
# message to the engine), and without LTO each of those is a call; with
# -fPIC not even a file's own global functions are inlined. With it, a
# Cap'n Web point select runs 22 % fewer of dosqld's own instructions
# (callgrind) and costs 2-5 % less CPU (docs/benchmarks.md). Not in the
# sanitizer, fuzz or -O0 builds, which are for finding bugs and keep
# every call where it is.
# (binutils' ar indexes the LTO objects through the compiler's plugin in
# /usr/lib/bfd-plugins.)
LTO ?= $(if $(SANITIZE)$(filter -O0,$(OPT) $(DSQ_USER_CFLAGS)),0,1)
LTO_FLAGS = $(if $(filter 1,$(LTO)),-flto=auto)

# Ours first, then what the command line or the environment gives, so that
# `make CFLAGS=-O1` changes the optimisation and keeps -g, the dependency
# files and every warning. (The user's values are kept apart, exported for
# the recursive makes, so that they are not added twice.)
ifndef DSQ_USER_CFLAGS
export DSQ_USER_CFLAGS := $(CFLAGS)
export DSQ_USER_CPPFLAGS := $(CPPFLAGS)
export DSQ_USER_LDFLAGS := $(LDFLAGS)
endif
unexport CFLAGS CPPFLAGS LDFLAGS
FORTIFY := $(if $(SANITIZE)$(filter -O0,$(OPT) $(DSQ_USER_CFLAGS)),,-D_FORTIFY_SOURCE=2)
# Invariants (common/check.h) are checked in sanitizer and -O0 builds, and
# with CHECKS=1.
CHECKS ?=
DSQ_CHECKS := $(if $(SANITIZE)$(filter -O0,$(OPT) $(DSQ_USER_CFLAGS))$(filter 1,$(CHECKS)),-DDSQ_CHECKS)
override CPPFLAGS := -D_GNU_SOURCE -DDSQ_VERSION='"$(VERSION)"' -I. -I$(LLHTTP_INC) $(FORTIFY) $(DSQ_CHECKS) $(DSQ_USER_CPPFLAGS)
override CFLAGS := -std=gnu11 $(OPT) -g -fPIC $(HARDEN_CFLAGS) $(LTO_FLAGS) $(WARN) $(SAN) $(DEP_CFLAGS) -MMD -MP $(DSQ_USER_CFLAGS)
override LDFLAGS := $(SAN) $(HARDEN_LDFLAGS) $(LTO_FLAGS) $(DSQ_USER_LDFLAGS)

# Objects are rebuilt when the flags change (not only the sources; -Werror
# changes no output, so it does not count): the
# flags of the last build are kept in $(B)/.flags (not by make -n).
FLAGS := $(B)/.flags
ifeq ($(filter clean deps,$(MAKECMDGOALS))$(findstring n,$(firstword -$(MAKEFLAGS))),)
FLAGS_NOW := $(filter-out -Werror,$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS))
ifneq ($(FLAGS_NOW),$(file < $(FLAGS)))
$(shell mkdir -p $(B))
$(file > $(FLAGS),$(FLAGS_NOW))
endif
endif
$(FLAGS): ;

# Every module's sources; main.c is the daemon's alone. The engine's are in
# its subsystems' folders (engine/runtime, storage, tier, cdc); engine/*.c
# still counts if one is put there. Cap'n Web's are in protocol/capnweb/;
# replication and the nodes' links in cluster/; the lakehouse's (Parquet, Avro,
# Iceberg manifests) in lake/.
LIB_SRC := $(wildcard common/*.c protocol/*.c protocol/*/*.c engine/*.c engine/*/*.c cluster/*.c sharding/*.c lake/*.c) \
           $(filter-out server/main.c,$(wildcard server/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/obj/%.o)
LLHTTP_OBJ := $(B)/obj/llhttp/api.o $(B)/obj/llhttp/http.o $(B)/obj/llhttp/llhttp.o
LIB := $(B)/libdosqld.a

UNIT_SRC := $(wildcard tests/unit/*/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/unit/%)
TOOLS_BIN := $(B)/tests/tools/notify_sink $(B)/tests/tools/engine_stress $(B)/tests/tools/syncshim.so \
             $(B)/tests/tools/objcli $(B)/tests/tools/manifest_write $(B)/tests/tools/parquet_write \
             $(B)/tests/tools/changelog_write $(B)/tests/tools/parquet_read

# The dosql shell: client/ plus the common/ helpers it takes from $(LIB).
CLIENT_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(wildcard client/*.c))

.PHONY: all run test unit integration bench install clean deps soak chaos chaos-etcd fuzz fuzz-build fuzz-bins fuzz-test fuzz-corpus sdk-ts sdk-ts-test
all: $(B)/dosqld $(if $(filter yes,$(HAVE_SHELL)),$(B)/dosql)
ifneq ($(HAVE_SHELL),yes)
	@echo "note: the shell (dosql) is not built: libedit is missing (./configure --missing shell)"
endif

$(B)/obj/%.o: %.c config.mk $(FLAGS)
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# llhttp's generated C is not ours: build it without our warnings.
$(B)/obj/llhttp/%.o: $(LLHTTP_SRC)/%.c config.mk
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) -I$(LLHTTP_INC) -std=gnu11 $(OPT) -g -fPIC -w $(SAN) -c -o $@ $<

$(LIB): $(LIB_OBJ) $(LLHTTP_OBJ)
	@rm -f $@
	$(say) AR $@
	$(Q)ar rcs $@ $^

$(B)/dosqld: $(B)/obj/server/main.o $(LIB) $(FLAGS)
	$(say) LINK $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAGS),$^) $(DEP_LIBS) $(CURL_LIBS) -lm

$(B)/dosql: $(CLIENT_OBJ) $(LIB) $(FLAGS)
	$(say) LINK $@
	$(Q)$(CC) $(LDFLAGS) -o $@ $(filter-out $(FLAGS),$^) $(CLIENT_LIBS) $(CURL_LIBS) $(EDIT_LIBS) -lm

$(B)/tests/unit/%: tests/unit/%.c $(LIB) config.mk $(FLAGS)
	@mkdir -p $(@D)
	$(say) TEST $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(CRITERION_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) \
	    $(CRITERION_LIBS) $(DEP_LIBS) $(CURL_LIBS) -lm

# The shell's tests (tests/unit/client/) link client/'s objects too, all
# but dosql.c's (its main and the line editor).
CLIENT_TEST_OBJ := $(filter-out $(B)/obj/client/dosql.o,$(CLIENT_OBJ))
$(B)/tests/unit/client/%: tests/unit/client/%.c $(CLIENT_TEST_OBJ) $(LIB) config.mk $(FLAGS)
	@mkdir -p $(@D)
	$(say) TEST $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(CRITERION_CFLAGS) $(LDFLAGS) -o $@ $< $(CLIENT_TEST_OBJ) $(LIB) \
	    $(CRITERION_LIBS) $(DEP_LIBS) $(CURL_LIBS) -lm

$(B)/tests/tools/%: tests/tools/%.c $(LIB) config.mk $(FLAGS)
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(DEP_LIBS) $(CURL_LIBS) -lm

# The crash tests' LD_PRELOAD library: plain C without sanitizers, so that
# it loads into any build of dosqld.
$(B)/tests/tools/syncshim.so: tests/tools/syncshim.c config.mk
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) -std=gnu11 $(OPT) -fPIC -shared $(WARN) -o $@ $< -ldl -lpthread

tests/node_modules/.stamp: tests/package.json tests/package-lock.json
	cd tests && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

# The official clients (capnweb) for tests/interop, pinned by its lock file.
tests/interop/node_modules/.stamp: tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

# The TypeScript client (sdk/typescript): its packages by its own lock
# file, then tsc (and a type check of its declarations). Its tests run
# with the integration tests (tests/run), or alone with make sdk-ts-test.
SDK_TS := sdk/typescript
$(SDK_TS)/node_modules/.stamp: $(SDK_TS)/package.json $(SDK_TS)/package-lock.json
	cd $(SDK_TS) && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

$(SDK_TS)/dist/index.js: $(SDK_TS)/node_modules/.stamp $(SDK_TS)/tsconfig.json $(SDK_TS)/test/tsconfig.json \
		$(wildcard $(SDK_TS)/src/*.ts) $(SDK_TS)/test/types.ts
	cd $(SDK_TS) && $(NPM) run --silent build && $(NPM) run --silent typecheck
	@touch $@

sdk-ts: $(SDK_TS)/dist/index.js

sdk-ts-test: all $(SDK_TS)/dist/index.js
	DOSQLD="$(CURDIR)/$(B)/dosqld" DSQ_BUILD="$(CURDIR)/$(B)" node --test --test-reporter=spec $(SDK_TS)/test/*.test.mjs

# As root on Debian, run and test install what is missing first (make
# deps) and go on with the configuration that makes.
ifeq ($(ROOT_APT)$(HAVE_SHELL),yesno)
run:
	$(Q)$(MAKE) --no-print-directory deps
	$(Q)$(MAKE) --no-print-directory run
else
PORT := $(or $(PORT),8787)
DATA := $(or $(DATA),./data)
run: all
	@mkdir -p '$(DATA)'
	exec ./$(B)/dosqld --listen 127.0.0.1:$(PORT) --data-dir '$(DATA)'
endif

ifeq ($(HAVE_TESTS),yes)
unit: $(UNIT_BIN)
	SANITIZE=$(SANITIZE) ./tests/run unit $(B)

integration: all $(TOOLS_BIN) tests/node_modules/.stamp tests/interop/node_modules/.stamp $(SDK_TS)/dist/index.js
	SANITIZE=$(SANITIZE) ./tests/run integration $(B)

test: all $(UNIT_BIN) $(TOOLS_BIN) tests/node_modules/.stamp tests/interop/node_modules/.stamp $(SDK_TS)/dist/index.js fuzz-build
	SANITIZE=$(SANITIZE) ./tests/run all $(B)
else ifeq ($(ROOT_APT),yes)
unit integration test:
	$(Q)$(MAKE) --no-print-directory deps
	$(Q)$(MAKE) --no-print-directory $@
else
unit integration test:
	@echo "$@: the tests' dependencies are missing. Install them with:" >&2
	@echo "    apt-get install -y $$(./configure --missing tests)" >&2
	@exit 1
endif

# ---- fuzzing (tests/fuzz/, docs/testing.md) ----
# Each tests/fuzz/fuzz_NAME.c is one libFuzzer target, linked with
# -fsanitize=fuzzer,address,undefined against a library built for it.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_B)/%)
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

# The toolchain is checked first (make deps installs it).
$(FUZZ_B)/.toolchain: tests/fuzz/toolchain
	@mkdir -p $(@D)
	$(Q)FUZZ_CC=$(FUZZ_CC) ./tests/fuzz/toolchain
	@touch $@

fuzz-build: $(FUZZ_B)/.toolchain
	$(Q)$(MAKE) --no-print-directory FUZZ=1 fuzz-bins

fuzz-bins: $(FUZZ_BIN)

# A target may add link flags (FUZZ_LDFLAGS) with a target-specific variable.
$(FUZZ_B)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(LIB) config.mk
	@mkdir -p $(@D)
	$(say) FUZZ $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -fsanitize=fuzzer,address,undefined $(FUZZ_LDFLAGS) -o $@ $< $(LIB) \
	    $(DEP_LIBS) $(CURL_LIBS) -lm

fuzz: fuzz-build
	./tests/fuzz/run $(FUZZ_B) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Regenerate the storage targets' binary seeds with the engine's writers.
$(FUZZ_B)/mkcorpus: tests/fuzz/mkcorpus.c $(LIB) config.mk
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(DEP_LIBS) $(CURL_LIBS) -lm

fuzz-corpus: $(FUZZ_B)/.toolchain
	$(Q)$(MAKE) --no-print-directory FUZZ=1 $(FUZZ_B)/mkcorpus
	./$(FUZZ_B)/mkcorpus tests/fuzz/corpus

# What make test runs of them: each briefly, counted as tests.
fuzz-test: fuzz-build
	./tests/run fuzz

# The soak runs on its own sanitizer build (a sub-make: SANITIZE picks the
# build directory) and writes its samples and report to build-soak/.
SOAK_SECONDS ?= 1800
soak: tests/node_modules/.stamp
	$(MAKE) SANITIZE=address,undefined all
	DOSQLD=$(CURDIR)/build-address-undefined/dosqld DSQ_BUILD=$(CURDIR)/build-address-undefined \
	    node tests/soak/soak.mjs $(SOAK_SECONDS) build-soak

# Chaos (tests/chaos/chaos.mjs): three nodes under writes and a fault per
# round (partition, pause, kill, delay, black hole, promotions); then
# every acknowledged write must be on every copy. CHAOS_ROUNDS rounds
# (make test runs 6 of them: tests/cluster/chaos.test.mjs). Then the same
# on etcd (chaos-etcd).
CHAOS_ROUNDS ?= 100
chaos: all tests/node_modules/.stamp
	DOSQLD=$(CURDIR)/$(B)/dosqld DSQ_BUILD=$(CURDIR)/$(B) node tests/chaos/chaos.mjs $(CHAOS_ROUNDS)
	$(Q)$(MAKE) --no-print-directory chaos-etcd

# Chaos on etcd (tests/chaos/chaos-etcd.mjs): an etcd and four nodes that
# fail over by themselves, three copies of 2 to 4 databases under writes,
# and a fault per round (a node killed, stopped past its lease or cut off
# from etcd, most often a primary; now and then etcd killed); a node gone
# past node_dead_after has its copies made again elsewhere. Then every
# database must have its three copies, every acknowledged write must be
# on every copy, no epoch promoted twice, etcd's epochs only up. Prints the failover times. CHAOS_ROUNDS rounds, CHAOS_SEED
# (default: the time) to replay a run (make test runs 4 rounds:
# tests/cluster/chaos-etcd.test.mjs).
CHAOS_SEED ?=
chaos-etcd: all tests/node_modules/.stamp
	DOSQLD=$(CURDIR)/$(B)/dosqld DSQ_BUILD=$(CURDIR)/$(B) node tests/chaos/chaos-etcd.mjs $(CHAOS_ROUNDS) $(CHAOS_SEED)

# The WebSocket load generator for bench/point_select (libuv and wslay only).
$(B)/bench/wsload: bench/wsload.c config.mk
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< -luv -lwslay

# bench/commits' raw SQLite and fsync-rate peer.
$(B)/bench/sqlite_commits: bench/sqlite_commits.c config.mk
	@mkdir -p $(@D)
	$(say) CC $<
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< -lsqlite3 -lpthread

# Every driver appends its medians to bench/results/summary.csv; the table
# of this run's rows comes last (bench/summary). QUICK=1 and BASE (a
# command-line variable, so in the drivers' environment) reach every
# driver. As root on Debian, the benchmarks' peers and tools are installed
# first (make deps DEPS=bench); BENCH_DEPS_TRIED stops a second attempt.
ifeq ($(HAVE_BENCH),yes)
bench: all $(B)/bench/wsload $(B)/bench/sqlite_commits $(B)/tests/tools/objcli tests/node_modules/.stamp \
       tests/interop/node_modules/.stamp
	@mkdir -p $(B)/bench
	@date -u +%Y-%m-%dT%H:%M:%SZ >$(B)/bench/started
	./bench/http_ceiling $(B)/dosqld
	./bench/point_select $(B)/dosqld $(B)/bench/wsload
	./bench/capnweb $(B)/dosqld $(B)/bench/wsload
	./bench/commits $(B)/dosqld $(B)/bench/wsload $(B)/bench/sqlite_commits
	./bench/replication $(B)/dosqld $(B)/bench/wsload
	./bench/mixed $(B)/dosqld $(B)/bench/wsload
	./bench/scale $(B)/dosqld
	./bench/cdc $(B)/dosqld $(B)/bench/wsload
	./bench/tiering $(B)/dosqld $(B)/tests/tools/objcli $(B)/bench/wsload
	./bench/cluster $(B)/dosqld $(B)/bench/wsload
	./bench/sharding $(B)/dosqld
	./bench/libsql $(B)/dosqld
	./bench/dataio $(B)/dosqld $(B)/dosql
	./bench/lake $(B)/dosqld
	./bench/summary $$(cat $(B)/bench/started)
else ifeq ($(ROOT_APT)$(BENCH_DEPS_TRIED),yes)
bench:
	$(Q)$(MAKE) --no-print-directory deps DEPS=bench
	$(Q)$(MAKE) --no-print-directory BENCH_DEPS_TRIED=1 bench
else
bench:
	@need=$$(./configure --missing bench); \
	if [ -n "$$need" ]; then \
	    echo "bench: the benchmarks' dependencies are missing. Install them with:" >&2; \
	    echo "    apt-get install -y $$need" >&2; \
	else \
	    echo "bench: config.mk predates the benchmarks' packages: run ./configure" >&2; \
	fi; \
	exit 1
endif

DESTDIR ?=
# /usr installs its configuration in /etc; other prefixes in PREFIX/etc.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
BINDIR := $(PREFIX)/bin
UNITDIR := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d

# Rebuilt on every install: PREFIX may differ from the last one.
.PHONY: $(B)/dosqld.service $(B)/dosqld.tmpfiles
$(B)/dosqld.service: systemd/dosqld.service.in
	@mkdir -p $(@D)
	$(Q)sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< > $@
$(B)/dosqld.tmpfiles: systemd/dosqld.tmpfiles
	@mkdir -p $(@D)
	$(Q)sed -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< > $@

# The configuration may hold secrets (tokens, object-store keys): 0640,
# group dosqld, the group the service runs as (systemd/dosqld.sysusers),
# in a directory 0750 of that group. When the group does not exist yet
# (a DESTDIR staging, a first install before systemd-sysusers), the
# files stay root's, and the tmpfiles snippet gives them to the group
# (systemd-tmpfiles --create, and at every boot).
CONF_DIR := $(DESTDIR)$(SYSCONFDIR)/dosqld
install: all $(B)/dosqld.service $(B)/dosqld.tmpfiles
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	install -d -m 0750 $(CONF_DIR)
	install -m 0755 $(B)/dosqld $(DESTDIR)$(BINDIR)/dosqld
	install -m 0755 $(B)/dosql $(DESTDIR)$(BINDIR)/dosql
	@if [ -e $(CONF_DIR)/dosqld.conf ]; then \
	    echo "keeping existing $(CONF_DIR)/dosqld.conf"; \
	else install -m 0640 conf/dosqld.conf $(CONF_DIR)/dosqld.conf; fi
	@if getent group dosqld >/dev/null 2>&1; then \
	    chgrp dosqld $(CONF_DIR) $(CONF_DIR)/dosqld.conf 2>/dev/null || \
	        echo "note: could not give $(SYSCONFDIR)/dosqld to group dosqld; systemd-tmpfiles --create will"; \
	else \
	    echo "note: no group dosqld yet: systemd-sysusers makes it, then systemd-tmpfiles --create gives it $(SYSCONFDIR)/dosqld"; \
	fi
	install -m 0644 $(B)/dosqld.service $(DESTDIR)$(UNITDIR)/dosqld.service
	install -m 0644 systemd/dosqld.sysusers $(DESTDIR)$(SYSUSERSDIR)/dosqld.conf
	install -m 0644 $(B)/dosqld.tmpfiles $(DESTDIR)$(TMPFILESDIR)/dosqld.conf

clean:
	rm -rf build build-* $(SDK_TS)/dist

-include $(LIB_OBJ:.o=.d) $(CLIENT_OBJ:.o=.d) $(FUZZ_BIN:=.d) $(FUZZ_B)/mkcorpus.d $(B)/obj/server/main.d $(UNIT_BIN:=.d) $(TOOLS_BIN:=.d) \
         $(B)/bench/wsload.d
