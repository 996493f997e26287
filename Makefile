# arbcore -- build, test, bench, install.
#
#   make                 libarbcore + arbcore + plugins (+ CUDA when nvcc exists)
#   make test            Check suites (GPU cases skip with a message without a GPU)
#   make bench           kernel / step benchmarks (need a GPU)
#   make install         PREFIX=/usr/local DESTDIR=
#   make NO_CUDA=1       CPU only
#   make CUDA_ARCH=...   override the nvcc -gencode list
#
# Layout: build/core/*.o build/cuda/*.o build/libarbcore.a build/arbcore
#         build/plugins/<name>.so build/tests/check_arbcore build/bench/*

CC      ?= gcc
PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   := build

CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
OPT     ?= -O2 -march=x86-64-v2 -ftree-vectorize
CFLAGS  ?=
ALL_CFLAGS = $(CSTD) $(OPT) $(WARN) -fPIC -fopenmp -Icore/include -Icore -MMD -MP $(CFLAGS)
LDLIBS  := -ldl -lm -lpthread -fopenmp

INIH_CFLAGS := $(shell pkg-config --cflags inih 2>/dev/null)
INIH_LIBS   := $(shell pkg-config --libs inih 2>/dev/null || echo -linih)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm -pthread)

# ---------------------------------------------------------------- CUDA detect
ifeq ($(NO_CUDA),1)
  NVCC :=
else
  NVCC ?= $(shell command -v nvcc 2>/dev/null || ( test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc ))
endif
ifneq ($(strip $(NVCC)),)
  # nvcc may be a symlink or a wrapper (CI has /usr/local/bin/nvcc): ask nvcc
  # itself where its toolkit lives, then find the directory with libcudart.
  NVCC_DRYRUN := $(shell $(NVCC) --dryrun -c -x cu /dev/null -o /dev/null 2>&1)
  ifeq ($(origin CUDA_HOME),undefined)
  CUDA_HOME   := $(shell d=$$(printf '%s\n' '$(subst ','',$(NVCC_DRYRUN))' | tr ' ' '\n' | sed -n 's/^TOP=//p' | head -n1); \
                   [ -n "$$d" ] && readlink -f "$$d" || dirname "$$(dirname "$$(readlink -f "$(NVCC)")")")
  endif
  NVCC_LDIRS  := $(patsubst -L%,%,$(filter -L%,$(subst ",,$(NVCC_DRYRUN))))
  ifeq ($(origin CUDA_LIBDIR),undefined)
  CUDA_LIBDIR := $(firstword $(foreach d,$(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib $(NVCC_LDIRS) \
                   $(CUDA_HOME)/targets/sbsa-linux/lib /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu, \
                   $(if $(wildcard $(d)/libcudart.so),$(d))))
  endif
  ifeq ($(strip $(CUDA_LIBDIR)),)
    $(error nvcc found ($(NVCC), toolkit $(CUDA_HOME)) but no libcudart.so beside it; set CUDA_LIBDIR=/path or build with NO_CUDA=1)
  endif
  CUDA_ARCH   ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=compute_80
  NVCC_FLAGS  := -std=c++17 -O3 $(CUDA_ARCH) -Xcompiler -fPIC,-Wall -Icore/include -Icore \
                 --expt-relaxed-constexpr -lineinfo -MMD -MP
  CUDA_LIBS   := -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcudart -lstdc++
  ALL_CFLAGS  += -DARB_HAVE_CUDA=1
  $(info ✓ nvcc found ($(NVCC), libraries in $(CUDA_LIBDIR)): building CUDA kernels)
else
  CUDA_LIBS   :=
  $(info ✗ nvcc not found (or NO_CUDA=1): CPU only)
endif

# ---------------------------------------------------------------- sources
CORE_SRC   := $(filter-out core/main.c core/cuda_stub.c,$(wildcard core/*.c))
ifneq ($(strip $(NVCC)),)
  CUDA_SRC := $(wildcard core/cuda/*.cu)
else
  CUDA_SRC :=
  CORE_SRC += $(wildcard core/cuda_stub.c)
endif
CORE_OBJ   := $(patsubst core/%.c,$(BUILD)/core/%.o,$(CORE_SRC))
CUDA_OBJ   := $(patsubst core/cuda/%.cu,$(BUILD)/cuda/%.o,$(CUDA_SRC))
LIB        := $(BUILD)/libarbcore.a

# plugins: every plugins/<name>/<name>.c (plus <name>.cu when nvcc exists)
PLUGIN_NAMES := $(patsubst plugins/%/,%,$(sort $(dir $(wildcard plugins/*/*.c))))
PLUGIN_NAMES := $(foreach p,$(PLUGIN_NAMES),$(if $(wildcard plugins/$(p)/$(p).c),$(p)))
PLUGINS      := $(patsubst %,$(BUILD)/plugins/%.so,$(PLUGIN_NAMES))
PLUGIN_CFLAGS = $(CSTD) $(OPT) $(WARN) -fPIC -fvisibility=hidden -Icore/include -MMD -MP $(CFLAGS)

# tests: one runner, one suite per tests/check_<unit>.c (Suite *suite_<unit>(void))
TEST_SRC    := $(wildcard tests/check_*.c)
TEST_UNITS  := $(patsubst tests/check_%.c,%,$(TEST_SRC))
TEST_OBJ    := $(patsubst tests/%.c,$(BUILD)/tests/%.o,$(TEST_SRC) tests/test_main.c $(wildcard tests/testutil.c))
TEST_PLUGIN_SRC := $(wildcard tests/plugins/*.c)
TEST_PLUGINS := $(patsubst tests/plugins/%.c,$(BUILD)/tests/plugins/%.so,$(TEST_PLUGIN_SRC))
ifneq ($(strip $(NVCC)),)
  TEST_CU_SRC := $(wildcard tests/cuda/*.cu)
  TEST_CU_OBJ := $(patsubst tests/cuda/%.cu,$(BUILD)/tests/cuda/%.o,$(TEST_CU_SRC))
endif

.PHONY: all lib plugins test check bench install uninstall clean
all: $(BUILD)/arbcore $(PLUGINS)

lib: $(LIB)
plugins: $(PLUGINS)

$(BUILD)/core/%.o: core/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(INIH_CFLAGS) -DARB_PREFIX='"$(PREFIX)"' -c $< -o $@

$(BUILD)/cuda/%.o: core/cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

$(LIB): $(CORE_OBJ) $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/arbcore: $(BUILD)/core/main.o $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(INIH_LIBS) $(CUDA_LIBS) $(LDLIBS)

$(BUILD)/core/main.o: core/main.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# ---- plugins (C compiled with gcc, kernels with nvcc; linked -z defs)
$(BUILD)/plugins/%.o: plugins/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $(if $(NVCC),-DARB_HAVE_CUDA=1) -c $< -o $@

$(BUILD)/plugins/%.cu.o: plugins/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -Xcompiler -fvisibility=hidden -c $< -o $@

ZDEFS_NV := -Xlinker -z,defs
ZDEFS_CC := -Wl,-z,defs
plugin_objs = $(patsubst plugins/%.c,$(BUILD)/plugins/%.o,$(wildcard plugins/$(1)/*.c)) \
  $(if $(NVCC),$(patsubst plugins/%.cu,$(BUILD)/plugins/%.cu.o,$(wildcard plugins/$(1)/*.cu)))
define PLUGIN_RULE
$(BUILD)/plugins/$(1).so: $(call plugin_objs,$(1))
	$(if $(and $(NVCC),$(wildcard plugins/$(1)/*.cu)),$(NVCC) -shared $(CUDA_ARCH) $(ZDEFS_NV) -o $$@ $$^ -lcudart -lm,$(CC) -shared $(ZDEFS_CC) -o $$@ $$^ -lm)
endef
$(foreach p,$(PLUGIN_NAMES),$(eval $(call PLUGIN_RULE,$(p))))

# ---- tests
$(BUILD)/tests/suites.h: $(TEST_SRC)
	@mkdir -p $(dir $@)
	@printf '/* generated by make */\n' > $@
	@$(foreach u,$(TEST_UNITS),printf 'SUITE(%s)\n' $(u) >> $@;)

$(BUILD)/tests/%.o: tests/%.c $(BUILD)/tests/suites.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -I$(BUILD)/tests -Itests -c $< -o $@

$(BUILD)/tests/cuda/%.o: tests/cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

$(BUILD)/tests/plugins/%.so: tests/plugins/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -shared -Wl,-z,defs -o $@ $<

$(BUILD)/tests/check_arbcore: $(TEST_OBJ) $(TEST_CU_OBJ) $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(INIH_LIBS) $(CHECK_LIBS) $(CUDA_LIBS) $(LDLIBS)

test check: all $(BUILD)/tests/check_arbcore $(TEST_PLUGINS)
	ARB_TEST_BUILD=$(abspath $(BUILD)) $(abspath $(BUILD))/tests/check_arbcore

# ---- benchmarks (GPU)
BENCH_CU := $(wildcard bench/*.cu)
BENCH_BIN := $(patsubst bench/%.cu,$(BUILD)/bench/%,$(BENCH_CU))
$(BUILD)/bench/%: bench/%.cu $(LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(LIB) -Xcompiler -fopenmp $(INIH_LIBS) -lcublas -ldl -lm
bench: $(BENCH_BIN)
	@for b in $(BENCH_BIN); do echo "== $$b"; ./$$b || exit 1; done

# ---- install (PREFIX, DESTDIR). Installs exactly: bin/arbcore,
# lib/arbcore/plugins/<name>.so, include/arb/*.h, lib/libarbcore.a and
# lib/pkgconfig/{arbcore,arbcore-harness}.pc; uninstall removes exactly those.
# arbcore.pc: Cflags for plugins (no Libs: plugins never link core symbols),
# variable plugindir. arbcore-harness.pc: for an author's TEST program that
# runs a component on the core's CPU/CUDA backends (arb/harness.h):
# -larbcore and its dependencies of this build.
INST_HDRS    := $(notdir $(wildcard core/include/arb/*.h))
HARNESS_LIBS := $(INIH_LIBS) $(CUDA_LIBS) $(if $(NVCC),-lstdc++) $(LDLIBS)
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/arbcore/plugins \
	  $(DESTDIR)$(PREFIX)/include/arb $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BUILD)/arbcore $(DESTDIR)$(PREFIX)/bin/arbcore
	$(if $(PLUGINS),install -m 755 $(PLUGINS) $(DESTDIR)$(PREFIX)/lib/arbcore/plugins/)
	install -m 644 core/include/arb/*.h $(DESTDIR)$(PREFIX)/include/arb/
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libarbcore.a
	sed -e 's|@PREFIX@|$(PREFIX)|g' arbcore.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/arbcore.pc
	{ printf 'prefix=%s\nlibdir=$${prefix}/lib\n\n' '$(PREFIX)'; \
	  printf 'Name: arbcore-harness\nDescription: arbcore backends for plugin test programs (arb/harness.h)\n'; \
	  printf 'Version: 0.1.0\nRequires: arbcore\nLibs: -L$${libdir} -larbcore %s\n' '$(strip $(HARNESS_LIBS))'; \
	} > $(DESTDIR)$(PREFIX)/lib/pkgconfig/arbcore-harness.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/arbcore $(DESTDIR)$(PREFIX)/lib/libarbcore.a \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/arbcore.pc \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/arbcore-harness.pc \
	  $(patsubst %,$(DESTDIR)$(PREFIX)/lib/arbcore/plugins/%.so,$(PLUGIN_NAMES)) \
	  $(patsubst %,$(DESTDIR)$(PREFIX)/include/arb/%,$(INST_HDRS))
	-rmdir $(DESTDIR)$(PREFIX)/lib/arbcore/plugins $(DESTDIR)$(PREFIX)/lib/arbcore \
	  $(DESTDIR)$(PREFIX)/include/arb 2>/dev/null

# ---- examples: out-of-tree plugin builds against an installed arbcore
# (examples/<name>/Makefile uses pkg-config only); tests/sdk/run.sh does the
# whole install -> build -> check -> train -> uninstall round trip.
.PHONY: sdk-check
sdk-check:
	tests/sdk/run.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
