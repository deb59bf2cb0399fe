# Makefile - tether: tetherd, tetherctl, tether-bench, tests.
#
#   make            release build in build/
#   make asan       ASan+UBSan build in build/asan/
#   make run        install deps, build, start tetherd with deploy/dev.ini
#   make cluster    three nodes, Redis and HAProxy on loopback (make cluster-down)
#   make test       install deps, unit + integration tests on release (memory and Redis) and ASan builds
#   make fuzz       libFuzzer targets in build/fuzz/ (clang)
#   make fuzz-run   each of them for FUZZ_SECONDS (20) from its corpus (part of make test)

CC      ?= cc
BORING_INC := /usr/include/android
BORING_LIB := /usr/lib/x86_64-linux-gnu/android

WARN    := -Wall -Wextra -Werror -Wshadow -Wundef -Wstrict-prototypes \
           -Wmissing-prototypes -Wformat=2 -Wvla
CFLAGS_BASE := -std=gnu11 -D_GNU_SOURCE -g -fno-omit-frame-pointer $(WARN) -MMD -MP
CPPFLAGS_BASE := -Iinclude -isystem $(BORING_INC)
LDLIBS_BASE := -luring -L$(BORING_LIB) -Wl,-rpath,$(BORING_LIB) -lssl -lcrypto \
               -lexpat -lsodium -lidn -linih -lmicrohttpd -lhiredis -lpthread
LDFLAGS_BASE := -Wl,-z,relro,-z,now,-z,noexecstack

# libsystemd is optional: with it, tetherd tells a Type=notify unit when it
# is ready (server/notify.c).
ifeq ($(shell pkg-config --exists libsystemd 2>/dev/null && echo y),y)
  CPPFLAGS_BASE += -DTETHER_SYSTEMD
  LDLIBS_BASE += -lsystemd
endif

MODE ?= release
ifeq ($(MODE),asan)
  B := build/asan
  OPT := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -DTETHER_DEBUG=1
else
  B := build
  OPT := -O2
endif

CFLAGS  = $(CFLAGS_BASE) $(OPT)
CPPFLAGS = $(CPPFLAGS_BASE)
LDFLAGS = $(LDFLAGS_BASE) $(OPT)

# Every server/ and store/ source goes into libtether.a, except the two mains.
MAINS    := server/main.c server/tetherctl.c
LIB_SRC  := $(filter-out $(MAINS),$(wildcard server/*.c store/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(B)/obj/%.o) $(B)/obj/gen/redis_lib_lua.o
BENCH_SRC := $(wildcard bench/*.c)
BENCH_OBJ := $(BENCH_SRC:%.c=$(B)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all asan deps run cluster cluster-down test test-unit test-integration test-integration-redis check-headers fuzz fuzz-run clean
all: $(B)/tetherd $(B)/tetherctl $(if $(BENCH_SRC),$(B)/tether-bench) $(UNIT_BIN)

asan:
	$(MAKE) MODE=asan all

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# expat's reparse-deferral switch (expat 2.6; Debian 12 backported it in
# libexpat1-dev 2.5.0-1+deb12u2). The version macros still say 2.5.0, so
# the probe compiles a call: an older header fails here with a message
# that names the package, not with an implicit-declaration error.
EXPAT_PROBE := int main(void) { return XML_SetReparseDeferralEnabled(0, 0); }
$(B)/expat-ok:
	@mkdir -p $(dir $@)
	@printf '#include <expat.h>\n$(EXPAT_PROBE)\n' | $(CC) -Werror=implicit-function-declaration -x c -o /dev/null - -lexpat 2>/dev/null || { \
	  echo "tether: libexpat1-dev is too old: XML_SetReparseDeferralEnabled is missing." >&2; \
	  echo "tether: need libexpat1-dev >= 2.5.0-1+deb12u2 (Debian 12); run scripts/deps.sh as root to upgrade it." >&2; \
	  exit 1; }
	@touch $@
$(B)/obj/server/xstream.o: | $(B)/expat-ok

# store/redis_lib.lua goes into the binaries as a C array (redis_lib.h), so
# tetherd and tetherctl load the FUNCTION library without the source tree.
$(B)/gen/redis_lib_lua.c: store/redis_lib.lua scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh $< redis_lib_lua > $@.tmp && mv $@.tmp $@
$(B)/obj/gen/redis_lib_lua.o: $(B)/gen/redis_lib_lua.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(B)/libtether.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/tetherd: $(B)/obj/server/main.o $(B)/libtether.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_BASE)

$(B)/tetherctl: $(B)/obj/server/tetherctl.o $(B)/libtether.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_BASE)

$(B)/tether-bench: $(BENCH_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_BASE) -lm

$(B)/tests/%: tests/unit/%.c $(B)/libtether.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-missing-prototypes $(LDFLAGS) -o $@ $< $(B)/libtether.a $(LDLIBS_BASE) -lcmocka

deps:
	@scripts/deps.sh

run: deps all
	@scripts/devcert.sh
	$(B)/tetherd -c deploy/dev.ini

# Three nodes on one Redis behind HAProxy, on loopback (deploy/cluster.sh).
cluster: deps all
	TETHER_BUILD=$(B) deploy/cluster.sh up

cluster-down:
	deploy/cluster.sh down

# A test that exits 77 was skipped (it says why: e.g. no redis-server).
test-unit: all
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; rc=0; $$t || rc=$$?; \
	  if [ $$rc -eq 77 ]; then echo "== $$t skipped"; elif [ $$rc -ne 0 ]; then exit $$rc; fi; done

# xmpp.js for the integration tests, pinned by the committed package-lock.json.
JS_DIR := tests/integration/js
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# libstrophe (profanity's library) as a test client: test_libstrophe.py.
# Without sanitizers: it is a client, and libstrophe is not instrumented.
$(B)/strophe_client: tests/integration/strophe_client.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -g -O1 -Wall -Wextra -Werror -o $@ $< $$(pkg-config --cflags --libs libstrophe)

test-integration: all $(B)/strophe_client $(if $(wildcard $(JS_DIR)/package-lock.json),$(JS_DIR)/node_modules/.installed)
	TETHER_BUILD=$(B) /usr/bin/python3 -m pytest -q tests/integration

# The integration tests again with every server on one real redis-server
# (conftest.py: TETHER_STORE=redis), but for the files marked fixed_store,
# whose servers name their store and would run unchanged.
test-integration-redis: all $(B)/strophe_client
	TETHER_STORE=redis TETHER_BUILD=$(B) /usr/bin/python3 -m pytest -q tests/integration

# The full suite: release build (memory store, then Redis), then the same
# tests on the ASan+UBSan build.
test: deps
	$(MAKE) MODE=release test-unit test-integration test-integration-redis
	$(MAKE) MODE=asan test-unit test-integration
	$(MAKE) fuzz-run

check-headers:
	@set -e; for h in include/tether/*.h; do \
	  echo "#include \"$${h#include/}\"" | $(CC) $(CPPFLAGS_BASE) $(filter-out -MMD -MP,$(CFLAGS_BASE)) -x c -fsyntax-only -; done

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz:
	@mkdir -p build/fuzz
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(CPPFLAGS_BASE) -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -o build/fuzz/$$n $$f $(LDLIBS_BASE); done

# Each libFuzzer target for FUZZ_SECONDS from a copy of its committed corpus
# (run by `make test`); a crash, leak or timeout fails, and its input is left
# in build/fuzz/ with the target's log.
FUZZ_SECONDS ?= 20
fuzz-run: fuzz
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); w=build/fuzz/work-$$n; \
	  rm -rf $$w && mkdir -p $$w; c=tests/fuzz/corpus/$${n#fuzz_}; \
	  if [ -d $$c ]; then cp -r $$c/. $$w/; fi; \
	  d=""; case $$n in fuzz_xstream|fuzz_c2s) d=-dict=tests/fuzz/xml.dict;; esac; \
	  echo "== $$n: $(FUZZ_SECONDS) s"; \
	  if ! build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	      -artifact_prefix=build/fuzz/$$n- $$d $$w > build/fuzz/$$n.log 2>&1; then \
	    tail -40 build/fuzz/$$n.log; echo "$$n failed: see build/fuzz/$$n.log" >&2; exit 1; fi; \
	  grep -E '^Done [0-9]+ runs' build/fuzz/$$n.log || tail -1 build/fuzz/$$n.log; done

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(BENCH_OBJ:.o=.d) $(B)/obj/server/main.d $(B)/obj/server/tetherctl.d $(UNIT_BIN:=.d)
