#!/usr/bin/env bash
# Install into a fresh prefix and use it the way a C/C++ shop does, with Debian's
# libpipeline-dev (man-db's libpipeline) installed at the same time:
#   - make install PREFIX=<fresh>; no installed path, pkg-config module, CMake package,
#     SONAME or include guard is one of libpipeline-dev's / libpipeline1's;
#   - a copy of cpp_examples OUTSIDE the repository builds with CMake find_package
#     (wspipe::wspipe and wspipe::wspipe_static) and with pkg-config (wspipe,
#     --static wspipe-static); the dynamic ones need libwspipe.so.0, the static ones no
#     libwspipe at all; each receives a TLS feed from tools/exchange_sim.py;
#   - one translation unit includes Debian's <pipeline.h> and <wspipe/pipeline.hpp> (C++17)
#     / <wspipe/pipeline.h> (C11) and links -lpipeline (man-db's) and ours;
#   - the C++ wrapper's callback in the processes layout counts in plain memory and sends
#     replies; a throwing callback ends the connection with PL_DISCONNECT_CALLBACK_ERROR
#     and its what(), and leaves nothing in /dev/shm.
#   bash tools/test.d/install.sh    (CARGO_TARGET_DIR honoured)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/lib/sim.sh
. tools/lib/preamble.sh
N=${N:-3000}
TMP=$(mktemp -d /tmp/plinst.XXXXXX)
cleanup() {
  kill_pids
  rm -rf "$TMP" /dev/shm/pipeline_pli$$* 2>/dev/null || true
}
trap cleanup EXIT
t0=$SECONDS

echo "== Debian's libpipeline-dev and cmake (installed alongside on purpose)"
need=()
for p in libpipeline-dev cmake; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== build + make install into a fresh prefix"
PREFIX=$TMP/prefix
make -s install PREFIX="$PREFIX" >/dev/null
find "$PREFIX" | sed "s|^$PREFIX||" | sort

echo "== no name shared with Debian's libpipeline"
clash=""
ours=$(cd "$PREFIX" && find . -mindepth 1 \( -type f -o -type l \) | sed 's|^\./||')
theirs=$(dpkg -L libpipeline-dev libpipeline1 | sed 's|^/usr/||; s|^lib/x86_64-linux-gnu/|lib/|')
for f in $ours; do
  if printf '%s\n' "$theirs" | grep -x "$f" >/dev/null; then clash="$clash $f"; fi
  case "$f" in include/pipeline.h|*/libpipeline.*|libpipeline.*) clash="$clash $f" ;; esac
done
soname=$(readelf -d "$PREFIX/lib/libwspipe.so.0" | sed -n 's/.*soname: \[\(.*\)\]/\1/p')
[ "$soname" = libwspipe.so.0 ] || clash="$clash soname=$soname"
for h in pipeline.h pipeline_consumer.h pipeline.hpp; do
  grep -q '^#ifndef PIPELINE_H$' "$PREFIX/include/wspipe/$h" && clash="$clash guard:$h"
done
guard=$(sed -n 's/^#define \(PIPELINE_H\)$/\1/p' /usr/include/pipeline.h)
[ "$guard" = PIPELINE_H ] || echo "(Debian's guard is not PIPELINE_H here?)"
pkg-config --modversion libpipeline | grep '^1\.' >/dev/null || clash="$clash pkg-config:libpipeline-is-not-debians"
if [ -z "$clash" ]; then result names ok "SONAME $soname; debian: $(pkg-config --modversion libpipeline)"; else result names FAIL "$clash"; fi

echo "== both headers in one program, both libraries linked"
cat >"$TMP/both.cpp" <<'CPP'
#include <pipeline.h>              /* Debian's (man-db) */
#include <wspipe/pipeline.hpp>     /* ours, C++ wrapper + C API */
#include <wspipe/pipeline_consumer.h>
#include <cstdio>
int main() {
    pipeline *p = pipeline_new();  /* man-db's */
    pipeline_free(p);
    std::printf("wspipe %s abi %u header abi %d\n", pl_version(), pl_abi_version(), PL_ABI_VERSION);
    return wspipe::abi_matches() ? 0 : 1;
}
CPP
cat >"$TMP/both.c" <<'C'
#include <wspipe/pipeline_consumer.h>
#include <pipeline.h>
#include <wspipe/pipeline.h>
#include <stdio.h>
int main(void) { pipeline *p = pipeline_new(); pipeline_free(p); PlConfig c; return pl_config_init(&c) == PL_OK && c.struct_size == sizeof c ? 0 : 1; }
C
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
if c++ -std=c++17 -Wall -Werror "$TMP/both.cpp" -o "$TMP/both_cpp" $(pkg-config --cflags --libs wspipe libpipeline) &&
   cc -std=c11 -Wall -Werror "$TMP/both.c" -o "$TMP/both_c" $(pkg-config --cflags --libs wspipe libpipeline) &&
   "$TMP/both_cpp" && "$TMP/both_c" &&
   ldd "$TMP/both_cpp" | grep "libwspipe.so.0 => $PREFIX" >/dev/null && ldd "$TMP/both_cpp" | grep 'libpipeline.so.1 => /' >/dev/null; then
  result both-headers ok
else
  result both-headers FAIL
fi

echo "== out-of-tree builds: CMake find_package and pkg-config, dynamic and static"
APP=$TMP/app
mkdir -p "$APP"
cp cpp_examples/*.cpp cpp_examples/*.c cpp_examples/*.h cpp_examples/CMakeLists.txt cpp_examples/Makefile "$APP/"
build_ok=1
cmake -S "$APP" -B "$APP/cm-dyn" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release >/dev/null &&
  cmake --build "$APP/cm-dyn" -j2 >/dev/null || build_ok=0
cmake -S "$APP" -B "$APP/cm-static" -DCMAKE_PREFIX_PATH="$PREFIX" -DWSPIPE_STATIC=ON -DCMAKE_BUILD_TYPE=Release >/dev/null &&
  cmake --build "$APP/cm-static" -j2 >/dev/null || build_ok=0
make -s -C "$APP" WSPIPE_PREFIX="$PREFIX" BUILD=pc-dyn >/dev/null || build_ok=0
make -s -C "$APP" WSPIPE_PREFIX="$PREFIX" BUILD=pc-static STATIC=1 >/dev/null || build_ok=0
for b in cm-dyn pc-dyn; do
  ldd "$APP/$b/cb_strategy" | grep "libwspipe.so.0 => $PREFIX" >/dev/null || { echo "$b: not linked to $PREFIX's libwspipe.so.0"; build_ok=0; }
done
for b in cm-static pc-static; do
  ldd "$APP/$b/cb_strategy" | grep "wspipe\|libpipeline" >/dev/null && { echo "$b: links a shared wspipe/libpipeline"; build_ok=0; }
done
ldd "$APP/pc-dyn/consumer_reader" | grep wspipe >/dev/null && { echo "consumer_reader links the library"; build_ok=0; }
if [ "$build_ok" = 1 ]; then result out-of-tree-builds ok; else result out-of-tree-builds FAIL; fi

echo "== certificates + feeds"
sh tools/testcerts.sh "$TMP/certs" >/dev/null
feed() { # name expect-regex program args...
  local name=$1 want=$2 prog=$3; shift 3
  local log=$TMP/$name.log
  start_sim --count "$N" --fragment-every 50
  timeout 60 "$prog" "$URL" --ca-file "$TMP/certs/ca.pem" "$@" >"$log" 2>&1 || true
  stop_sim
  if grep -Eq "$want" "$log"; then result "$name" ok "$(grep summary: "$log" | cut -c1-140)"; else tail -5 "$log"; result "$name" FAIL; fi
}
for b in cm-dyn cm-static pc-dyn pc-static; do
  feed "strategy-$b" "summary: messages=$N gaps=0 bad=0" "$APP/$b/strategy" --count "$N" --quiet --layout inline --wait backoff
done
for layout in inline threads processes; do
  feed "cb_strategy-$layout" "summary: messages=$N gaps=0 bad=0 replies=$((N / 100)) " \
    "$APP/cm-dyn/cb_strategy" --count "$N" --layout "$layout" --reply-every 100 --name "pli$$$layout"
done

echo "== a throwing C++ callback ends the connection with its reason, nothing left in /dev/shm"
for layout in inline processes; do
  name=pli$$throw$layout
  log=$TMP/throw-$layout.log
  start_sim --count "$N"
  rc=0
  timeout 60 "$APP/cm-static/cb_strategy" "$URL" --ca-file "$TMP/certs/ca.pem" --layout "$layout" --throw-at 500 \
    --name "$name" >"$log" 2>&1 || rc=$?
  stop_sim
  if [ "$rc" = 0 ] && grep -q "kind=PL_DISCONNECT_CALLBACK_ERROR reason=message callback failed: strategy: position limit" "$log" &&
     [ ! -e "/dev/shm/pipeline_$name" ]; then
    result "throwing-callback-$layout" ok "$(cut -c1-150 "$log")"
  else
    cat "$log"; ls -d /dev/shm/pipeline_"$name" 2>/dev/null || true
    result "throwing-callback-$layout" FAIL "rc=$rc"
  fi
done

echo
echo "== install: $PASSED passed, $FAILED failed ($((SECONDS - t0)) s)"
printf '  %s\n' "${RESULTS[@]}"
[ "$FAILED" = 0 ]
