#!/usr/bin/env bash
# tests/sdk/run.sh -- the third-party plugin SDK, end to end, the way an
# outside author uses it:
#
#   1. make install PREFIX=<tmp>: the exact file list, the .pc files
#      (Cflags, plugindir); with DESTDIR staging the .pc prefix is PREFIX;
#   2. the installed arbcore finds the installed plugins with no environment;
#   3. examples/dwconv copied to a directory whose path has a space, built
#      there out of tree with pkg-config only; one exported symbol;
#   4. its harness test (make check: finite differences; CPU vs CUDA on a GPU);
#   5. the installed arbcore trains a few CPU steps with the example's config,
#      the plugin found through run.plugin_path and through ARB_PLUGIN_PATH
#      (both paths with a space); a plugin directory writable by others is
#      refused;
#   6. make uninstall removes every installed file.
#
# Usage (from anywhere): tests/sdk/run.sh
#   BUILD=/tmp/b NO_CUDA=1 tests/sdk/run.sh   reuse a build dir / CPU only
# Prints PASS/FAIL per step; exit status 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
make_args=()
[ -n "${BUILD:-}" ] && make_args+=("BUILD=$BUILD")
[ -n "${NO_CUDA:-}" ] && make_args+=("NO_CUDA=$NO_CUDA")

tmp=$(mktemp -d /tmp/arbcore-sdk.XXXXXX)
chmod 755 "$tmp"
prefix="$tmp/prefix"
log="$tmp/log"
fails=0
keep=${KEEP_TMP:-0}
cleanup() { [ "$keep" = 1 ] || rm -rf "$tmp"; }
trap cleanup EXIT

pass() { echo "PASS: $*"; }
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
	if [ -s "$log" ]; then
		echo "---- last lines of output:"
		tail -n 25 "$log"
		echo "----"
	fi
}
# run a command quietly into $log; return its status
q() { "$@" >"$log" 2>&1; }

# --------------------------------------------------------------- 1. install
if q make "${make_args[@]}" install PREFIX="$prefix"; then
	pass "make install PREFIX=$prefix"
else
	fail "make install PREFIX=$prefix"
	echo "FAIL: sdk (install failed, nothing else to check)"
	exit 1
fi
plugins=()
for so in "$prefix"/lib/arbcore/plugins/*.so; do
	[ -e "$so" ] && plugins+=("$(basename "$so")")
done
missing=""
for f in bin/arbcore lib/libarbcore.a lib/pkgconfig/arbcore.pc \
	 lib/pkgconfig/arbcore-harness.pc include/arb/arb.h include/arb/tensor.h \
	 include/arb/ops.h include/arb/plugin.h include/arb/harness.h; do
	[ -e "$prefix/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ] && [ ${#plugins[@]} -gt 0 ]; then
	pass "installed files present (${#plugins[@]} plugins: ${plugins[*]})"
else
	fail "installed files missing:${missing:- no plugins}"
fi

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# (echo $(...) drops pkg-config's trailing blank)
cflags=$(echo $(pkg-config --cflags arbcore 2>"$log"))
pdir=$(echo $(pkg-config --variable=plugindir arbcore 2>>"$log"))
hlibs=$(echo $(pkg-config --libs arbcore-harness 2>>"$log"))
if [ "$cflags" = "-I$prefix/include" ] && [ "$pdir" = "$prefix/lib/arbcore/plugins" ] &&
   [[ "$hlibs" == *"-L$prefix/lib -larbcore"* ]]; then
	pass "pkg-config: cflags '$cflags', plugindir '$pdir', harness libs '$hlibs'"
else
	fail "pkg-config: cflags '$cflags', plugindir '$pdir', harness libs '$hlibs'"
fi

# DESTDIR staging: files under DESTDIR, .pc prefix = PREFIX
stage="$tmp/stage"
sp=/opt/arbcore-sdk-test
if q make "${make_args[@]}" install PREFIX="$sp" DESTDIR="$stage" &&
   [ -x "$stage$sp/bin/arbcore" ] &&
   grep -qx "prefix=$sp" "$stage$sp/lib/pkgconfig/arbcore.pc" &&
   grep -qx "prefix=$sp" "$stage$sp/lib/pkgconfig/arbcore-harness.pc" &&
   [ ! -e "$sp" ]; then
	pass "DESTDIR staging: files under DESTDIR, .pc prefix=$sp"
else
	fail "DESTDIR staging (PREFIX=$sp DESTDIR=$stage)"
fi
if q make "${make_args[@]}" uninstall PREFIX="$sp" DESTDIR="$stage" &&
   [ -z "$(find "$stage" -type f)" ]; then
	pass "DESTDIR uninstall leaves no file"
else
	fail "DESTDIR uninstall left: $(find "$stage" -type f | head -5 | tr '\n' ' ')"
fi

# ------------------------------------- 2. installed arbcore finds its plugins
if (cd "$tmp" && q env -u ARB_PLUGIN_PATH "$prefix/bin/arbcore" plugins) &&
   grep -q "$prefix/bin/../lib/arbcore/plugins" "$log" &&
   grep -q "${#plugins[@]} plugins found" "$log"; then
	pass "installed arbcore lists its ${#plugins[@]} installed plugins with no environment"
else
	fail "installed arbcore does not find $prefix/lib/arbcore/plugins"
fi

# ------------------------ 3. the example, out of tree, under a path with a space
ex="$tmp/third party/dwconv"
mkdir -p "$ex"
chmod 755 "$tmp/third party" "$ex"
cp examples/dwconv/*.c examples/dwconv/*.cu examples/dwconv/*.h \
   examples/dwconv/Makefile examples/dwconv/dwconv.ini "$ex/"
if (cd "$ex" && q make); then
	pass "example built out of tree with pkg-config only ($ex/build/dwconv.so)"
else
	fail "example build in '$ex'"
fi
syms=$(nm -D --defined-only "$ex/build/dwconv.so" 2>/dev/null | awk '{print $3}' |
       grep -Ev '^(_init|_fini|_edata|_end|__bss_start)$' | tr '\n' ' ')
if [ "$syms" = "arb_plugin_descriptor " ]; then
	pass "dwconv.so exports only arb_plugin_descriptor"
else
	fail "dwconv.so exports: $syms"
fi

# ------------------------------------------------------- 4. its harness test
if (cd "$ex" && make check >"$log" 2>&1); then
	grep -E '^(PASS|SKIP)' "$log" | sed 's/^/    /'
	pass "example harness test (make check)"
else
	fail "example harness test (make check)"
fi

# ---------------------------------------- 5. train with the installed arbcore
trained() {   # $1 = steps
	grep -q '^\[dwconv\] info: gated depthwise causal conv' "$log" &&
	grep -q "^step $1/$1 " "$log" && grep -q "^done: step $1," "$log"
}
if q env -u ARB_PLUGIN_PATH "$prefix/bin/arbcore" -c examples/dwconv/dwconv.ini \
	--set run.device=cpu --set run.dir="$tmp/run" --set run.plugin_path="$ex/build" \
	--set train.steps=5 && trained 5; then
	pass "installed arbcore trained 5 CPU steps with dwconv (run.plugin_path='$ex/build')"
	grep -E '^(\[dwconv\]|step 5/5|done:)' "$log" | sed 's/^/    /'
else
	fail "training with run.plugin_path='$ex/build'"
fi
rm -rf "$tmp/run"
if q env ARB_PLUGIN_PATH="$ex/build" "$prefix/bin/arbcore" -c examples/dwconv/dwconv.ini \
	--set run.device=cpu --set run.dir="$tmp/run" --set run.plugin_path= \
	--set train.steps=2 && trained 2; then
	pass "installed arbcore trained 2 CPU steps with dwconv (ARB_PLUGIN_PATH='$ex/build')"
else
	fail "training with ARB_PLUGIN_PATH='$ex/build'"
fi
rm -rf "$tmp/run"
bad="$tmp/shared dir"
mkdir -p "$bad"
cp "$ex/build/dwconv.so" "$bad/"
chmod 777 "$bad"
if ! q env -u ARB_PLUGIN_PATH "$prefix/bin/arbcore" -c examples/dwconv/dwconv.ini \
	--set run.dir="$tmp/run" --set run.plugin_path="$bad" --set train.steps=1 &&
   grep -qi 'writable' "$log"; then
	pass "a plugin directory writable by others is refused ($(grep -i -m1 -o 'writable[^.]*' "$log"))"
else
	fail "plugin in a world-writable directory was not refused"
fi
chmod 755 "$bad"

# ----------------------------------------------------------------- 6. uninstall
if q make "${make_args[@]}" uninstall PREFIX="$prefix" &&
   [ -z "$(find "$prefix" -type f 2>/dev/null)" ] &&
   [ ! -e "$prefix/lib/arbcore" ] && [ ! -e "$prefix/include/arb" ]; then
	pass "make uninstall PREFIX=$prefix removed every installed file"
else
	fail "make uninstall left: $(find "$prefix" -type f 2>/dev/null | head -5 | tr '\n' ' ')"
fi

if [ "$fails" -eq 0 ]; then
	echo "PASS: sdk (install, out-of-tree example, harness, training, uninstall)"
	exit 0
fi
echo "FAIL: sdk ($fails step(s) failed)"
exit 1
