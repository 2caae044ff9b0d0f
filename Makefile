# sluice: a rate-limiting reverse proxy that holds and releases.
#
#   make            build build/sluice (optimised, with debug info)
#   make run        install what is missing, build, run on proxy.yaml.sample (foreground)
#   make test       install what is missing, build under ASan+UBSan, run unit tests, a few
#                   seconds of each fuzz harness, integration tests
#   make fuzz       each libFuzzer harness for FUZZ_SECONDS (see tests/fuzz/README.md)
#   make bench      wrk against sluice and nginx in the same run (see bench/README.md)
#   make bench-shared  three instances sharing one budget through Redis, against one alone
#   make screenshot docs/dashboard.png: the admin dashboard of a demo under load (Chromium)
#   make install    PREFIX=/usr/local DESTDIR=
#
# User CFLAGS/LDFLAGS are added to ours, never replace them.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= $(PREFIX)/etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
LOGROTATEDIR ?= $(SYSCONFDIR)/logrotate.d
DESTDIR    ?=
PKG_CONFIG ?= pkg-config
CC         ?= cc
PYTEST     ?= pytest-3
VERSION    := 0.1.0

PKGS := libevent_openssl libevent_extra libevent openssl yaml-0.1 hiredis jansson

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wno-unused-parameter
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -DSLUICE_VERSION='"$(VERSION)"' -I. $(WARN) -MMD -MP
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
FINAL_CFLAGS  = $(BASE_CFLAGS) $(PKG_CFLAGS) $(OPT) $(CFLAGS)
FINAL_LDFLAGS = $(LDFLAGS)
FINAL_LIBS    = $(PKG_LIBS) -lm $(LIBS)

LIMITER_SRC := limiter/bucket.c limiter/queue.c limiter/fairq.c limiter/lease.c limiter/dispatch.c
CONF_SRC    := conf/conf.c conf/schema.c conf/node.c conf/diag.c conf/units.c
# proxy/dashboard_assets.c is generated (see "dashboard" below) and checked in, so it is
# in this list in a fresh tree too.
PROXY_SRC   := $(filter-out proxy/main.c,$(sort $(wildcard proxy/*.c) proxy/dashboard_assets.c))
DAEMON_SRC  := $(LIMITER_SRC) $(CONF_SRC) $(PROXY_SRC) proxy/main.c

UNIT_TESTS  := $(patsubst tests/unit/%.c,%,$(wildcard tests/unit/test_*.c))

# Release build
REL := build/obj
REL_OPT := -O2 -g
# Sanitizer build: its own directory so objects never mix
SAN := build/asan
SAN_OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

# ---------------------------------------------------------------- fuzzing (libFuzzer)
# Every parser of untrusted bytes has a harness: tests/fuzz/fuzz_NAME.c (one
# LLVMFuzzerTestOneInput), a seed corpus tests/fuzz/corpus/NAME/ and optionally a
# dictionary tests/fuzz/NAME.dict. To add one, put NAME
# in FUZZERS and list the sources it links in FUZZ_DEPS_NAME; if needed, also
# FUZZ_PKGS_NAME (pkg-config packages to link) and FUZZ_MAXLEN_NAME (longest input).
# Each builds to build/fuzz/NAME and runs on a copy of its corpus in build/fuzz/corpus-NAME.
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_MAXLEN        ?= 4096
FUZZ := build/fuzz
FUZZ_OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
            -fno-sanitize-recover=undefined

FUZZERS := conf units feedback http1_request http1_response aggmerge
FUZZ_DEPS_conf       := $(CONF_SRC)
FUZZ_PKGS_conf       := yaml-0.1
FUZZ_MAXLEN_conf     := 8192
FUZZ_DEPS_units      := conf/units.c
FUZZ_MAXLEN_units    := 128
FUZZ_DEPS_feedback   := proxy/feedback.c
FUZZ_MAXLEN_feedback := 512
FUZZ_DEPS_http1_request   := proxy/http1.c
FUZZ_DEPS_http1_response  := proxy/http1.c
FUZZ_DEPS_aggmerge   := proxy/aggmerge.c
FUZZ_PKGS_aggmerge   := jansson
FUZZ_MAXLEN_aggmerge := 8192

FUZZ_BINS := $(FUZZERS:%=$(FUZZ)/%)
fuzz_maxlen = $(or $(FUZZ_MAXLEN_$(1)),$(FUZZ_MAXLEN))
fuzz_libs   = $(if $(FUZZ_PKGS_$(1)),$(shell $(PKG_CONFIG) --libs $(FUZZ_PKGS_$(1))))
# run.sh HARNESS SEEDS WORKDIR SECONDS MAX_LEN, for each harness; fails after all ran.
fuzz_run    = fail=0; $(foreach f,$(FUZZERS),sh tests/fuzz/run.sh $(FUZZ)/$(f) \
              tests/fuzz/corpus/$(f) $(FUZZ)/$(2)-$(f) $(1) $(call fuzz_maxlen,$(f)) || fail=1;) \
              exit $$fail

.PHONY: all run test test-unit test-integration fuzz fuzz-smoke bench bench-shared bench-dispatch deps deps-run deps-bench install uninstall clean format screenshot

all: build/sluice

build/sluice: $(DAEMON_SRC:%.c=$(REL)/%.o)
	$(CC) $(REL_OPT) $(FINAL_LDFLAGS) -o $@ $^ $(FINAL_LIBS)

$(REL)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(REL_OPT) -c -o $@ $<

$(SAN)/sluice: $(DAEMON_SRC:%.c=$(SAN)/%.o)
	$(CC) $(SAN_OPT) $(FINAL_LDFLAGS) -o $@ $^ $(FINAL_LIBS)

$(SAN)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(SAN_OPT) -c -o $@ $<

# The admin dashboard (GET / on the admin listener), compiled in: contrib/dashboard/embed.sh
# turns index.html, app.js, app.css and favicon.svg into proxy/dashboard_assets.c (one C
# string line per source line). The result is checked in, so a fresh tree builds without
# running it and a diff shows what the binary serves; it is remade here whenever a source
# is newer (commit it with them). tests/integration/test_dashboard.py checks it is current.
DASHBOARD_SRC := $(addprefix contrib/dashboard/,index.html app.js app.css favicon.svg)
proxy/dashboard_assets.c: $(DASHBOARD_SRC) contrib/dashboard/embed.sh
	sh contrib/dashboard/embed.sh $@

# Each unit test links the one module it tests (and what that module needs).
UNIT_DEPS_test_bucket   := limiter/bucket.c
UNIT_DEPS_test_queue    := limiter/queue.c
UNIT_DEPS_test_lease    := limiter/lease.c limiter/bucket.c
UNIT_DEPS_test_dispatch := $(LIMITER_SRC)
UNIT_DEPS_test_fairq    := $(LIMITER_SRC)
UNIT_DEPS_test_units    := conf/units.c
UNIT_DEPS_test_conf     := $(CONF_SRC)
UNIT_DEPS_test_feedback := proxy/feedback.c
UNIT_DEPS_test_http1    := proxy/http1.c
UNIT_DEPS_test_aggmerge := proxy/aggmerge.c
# A test binary is built in one command, so -MMD records only its last source: name the
# headers of a module split over several files here.
$(SAN)/tests/test_conf: $(wildcard conf/*.h)
$(SAN)/tests/test_dispatch $(SAN)/tests/test_fairq $(SAN)/tests/test_lease: $(wildcard limiter/*.h)

.SECONDEXPANSION:
$(SAN)/tests/%: tests/unit/%.c $$(UNIT_DEPS_$$*) tests/unit/fakeclock.h
	@mkdir -p $(dir $@)
	$(CC) $(FINAL_CFLAGS) $(SAN_OPT) -o $@ $< $(UNIT_DEPS_$*) $(FINAL_LIBS) -lcmocka

# The harness and the code it drives, all instrumented; objects shared between harnesses.
$(FUZZ)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(BASE_CFLAGS) $(PKG_CFLAGS) $(FUZZ_OPT) $(CFLAGS) -c -o $@ $<

$(FUZZ_BINS): $(FUZZ)/%: $(FUZZ)/obj/tests/fuzz/fuzz_%.o $$(addprefix $(FUZZ)/obj/,$$(FUZZ_DEPS_$$*:.c=.o))
	$(FUZZ_CC) $(FUZZ_OPT) $(FINAL_LDFLAGS) -o $@ $^ $(call fuzz_libs,$*) -lm $(LIBS)

# Install what a fresh Debian machine lacks (apt-get), or say what to install.
deps:
	@sh contrib/install-deps.sh test

deps-run:
	@sh contrib/install-deps.sh run

deps-bench:
	@sh contrib/install-deps.sh bench

run: deps-run
	@$(MAKE) --no-print-directory build/sluice
	@sh contrib/run-demo.sh build/sluice proxy.yaml.sample

test: deps
	@$(MAKE) --no-print-directory $(SAN)/sluice $(UNIT_TESTS:%=$(SAN)/tests/%) $(FUZZ_BINS)
	@$(MAKE) --no-print-directory test-unit fuzz-smoke test-integration

test-unit:
	@set -e; for t in $(UNIT_TESTS); do \
	    echo "== unit: $$t"; \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	        $(SAN)/tests/$$t; \
	done

test-integration:
	SLUICE_BIN=$(CURDIR)/$(SAN)/sluice $(PYTEST) -q tests/integration $(PYTEST_ARGS)

# Each harness FUZZ_SECONDS on build/fuzz/corpus-NAME, which keeps what it finds between
# runs: exec/s, corpus growth, and a failure on any crash, leak, UB or hang.
fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@$(call fuzz_run,$(FUZZ_SECONDS),corpus)

# Each harness a few seconds from its seeds alone (a fresh copy); part of `make test`.
fuzz-smoke: $(FUZZ_BINS)
	@rm -rf $(FUZZERS:%=$(FUZZ)/smoke-%)
	@$(call fuzz_run,$(FUZZ_SMOKE_SECONDS),smoke)

bench: deps-bench
	@$(MAKE) --no-print-directory build/sluice
	@sh bench/run.sh

# Three instances sharing one budget through Redis, against one alone (bench/README.md).
bench-shared: deps-bench
	@$(MAKE) --no-print-directory build/sluice
	@sh bench/shared.sh

# docs/dashboard.png (shown in the README): the demo upstream behind three upstreams under
# load for SCREENSHOT_SECONDS, then the admin page rendered by headless Chromium
# (contrib/dashboard/screenshot.py). Look at the result before committing it.
SCREENSHOT_SECONDS ?= 75
screenshot: deps
	@$(MAKE) --no-print-directory build/sluice
	python3 contrib/dashboard/screenshot.py build/sluice docs/dashboard.png $(SCREENSHOT_SECONDS)

# limiter/dispatch alone: ns per request from 1 to 100 000 active keys.
build/dispatch_bench: bench/dispatch_bench.c $(LIMITER_SRC)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(REL_OPT) $(CFLAGS) $(FINAL_LDFLAGS) -o $@ $^ -lm $(LIBS)

bench-dispatch: build/dispatch_bench
	./build/dispatch_bench

install: build/sluice
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/sluice $(DESTDIR)$(MANDIR)/man1
	install -m 0755 build/sluice $(DESTDIR)$(BINDIR)/sluice
	install -m 0644 proxy.yaml.sample $(DESTDIR)$(SYSCONFDIR)/sluice/proxy.yaml.sample
	install -m 0644 docs/sluice.1 $(DESTDIR)$(MANDIR)/man1/sluice.1
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(LOGROTATEDIR)
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/etc/|$(SYSCONFDIR)/|g' \
	    contrib/sluice.service > $(DESTDIR)$(UNITDIR)/sluice.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/sluice.service
	install -m 0644 contrib/logrotate $(DESTDIR)$(LOGROTATEDIR)/sluice

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sluice $(DESTDIR)$(SYSCONFDIR)/sluice/proxy.yaml.sample \
	      $(DESTDIR)$(MANDIR)/man1/sluice.1 $(DESTDIR)$(UNITDIR)/sluice.service \
	      $(DESTDIR)$(LOGROTATEDIR)/sluice

format:
	clang-format -i $(wildcard proxy/*.[ch] limiter/*.[ch] conf/*.[ch] tests/unit/*.[ch] tests/fuzz/*.c)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
