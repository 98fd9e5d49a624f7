#!/bin/sh
# Install the C/C++ side of libpipeline under its installed name, wspipe (docs/c-api.md,
# "Names": Debian's man-db owns libpipeline.so.1, <pipeline.h>, PIPELINE_H and
# libpipeline.pc, so none of ours use them):
#
#   $PREFIX/include/wspipe/pipeline.h, pipeline.hpp, pipeline_consumer.h
#   $LIBDIR/libwspipe.so.X.Y.Z, libwspipe.so.0 -> it (the SONAME), libwspipe.so -> .so.0
#   $LIBDIR/libwspipe.a
#   $LIBDIR/pkgconfig/wspipe.pc, wspipe-static.pc
#   $LIBDIR/cmake/wspipe/wspipeConfig.cmake, wspipeConfigVersion.cmake
#
#   make install PREFIX=/opt/wspipe          (the top-level Makefile builds, then runs this)
#   PREFIX=/usr/local [LIBDIR=...] [DESTDIR=...] sh tools/install.sh
# Needs target/release/libpipeline.so and .a ($CARGO_TARGET_DIR honoured).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
DESTDIR=${DESTDIR:-}
target=${CARGO_TARGET_DIR:-$here/target}/release
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/Cargo.toml" | head -n1)
vmajor=${version%%.*}
vrest=${version#*.}
vminor=${vrest%%.*}
abi=$(sed -n 's/^pub const PL_ABI_VERSION: u32 = \([0-9]*\);/\1/p' "$here/src/ffi/abi.rs")
[ -n "$abi" ] || { echo "install: PL_ABI_VERSION not found in src/ffi/abi.rs" >&2; exit 1; }
for f in libpipeline.so libpipeline.a; do
  [ -f "$target/$f" ] || { echo "install: $target/$f missing: cargo build --release --lib first" >&2; exit 1; }
done
soname=$(readelf -d "$target/libpipeline.so" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libwspipe.so.$abi" ] || {
  echo "install: $target/libpipeline.so has SONAME '$soname', expected libwspipe.so.$abi (rebuild)" >&2; exit 1; }
# What the staticlib needs from the system (cargo's native-static-libs for this crate:
# OpenSSL, libelf and zlib for libbpf/libxdp, the C runtime's own).
native_libs="-lelf -lz -lssl -lcrypto -lgcc_s -lutil -lrt -lpthread -lm -ldl"
cmake_native_libs=$(printf '%s' "$native_libs" | sed 's/-l//g; s/ /;/g')

d_inc=$DESTDIR$INCLUDEDIR/wspipe
d_lib=$DESTDIR$LIBDIR
install -d "$d_inc" "$d_lib/pkgconfig" "$d_lib/cmake/wspipe"
install -m 644 "$here/include/pipeline.h" "$here/include/pipeline.hpp" "$here/include/pipeline_consumer.h" "$d_inc/"
install -m 755 "$target/libpipeline.so" "$d_lib/libwspipe.so.$version"
ln -sf "libwspipe.so.$version" "$d_lib/libwspipe.so.$abi"
ln -sf "libwspipe.so.$abi" "$d_lib/libwspipe.so"
install -m 644 "$target/libpipeline.a" "$d_lib/libwspipe.a"

# Relative paths for the CMake package (relocatable prefix).
rel() { # rel FROM TO: TO relative to FROM
  python3 -c 'import os,sys; print(os.path.relpath(sys.argv[2], sys.argv[1]))' "$1" "$2"
}
subst() { # subst IN OUT
  sed -e "s|@prefix@|$PREFIX|g" -e "s|@libdir@|$LIBDIR|g" -e "s|@includedir@|$INCLUDEDIR|g" \
      -e "s|@version@|$version|g" -e "s|@version_major@|$vmajor|g" -e "s|@version_minor@|$vminor|g" \
      -e "s|@abi@|$abi|g" -e "s|@native_libs@|$native_libs|g" -e "s|@cmake_native_libs@|$cmake_native_libs|g" \
      -e "s|@cmake_to_prefix@|$(rel "$LIBDIR/cmake/wspipe" "$PREFIX")|g" \
      -e "s|@rel_includedir@|$(rel "$PREFIX" "$INCLUDEDIR")|g" -e "s|@rel_libdir@|$(rel "$PREFIX" "$LIBDIR")|g" \
      "$1" > "$2"
}
subst "$here/tools/pkgconfig/wspipe.pc.in" "$d_lib/pkgconfig/wspipe.pc"
subst "$here/tools/pkgconfig/wspipe-static.pc.in" "$d_lib/pkgconfig/wspipe-static.pc"
subst "$here/tools/cmake/wspipeConfig.cmake.in" "$d_lib/cmake/wspipe/wspipeConfig.cmake"
subst "$here/tools/cmake/wspipeConfigVersion.cmake.in" "$d_lib/cmake/wspipe/wspipeConfigVersion.cmake"
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then
  case "$LIBDIR" in /usr/lib*|/usr/local/lib*|/lib*) ldconfig ;; esac
fi
echo "installed wspipe $version (ABI $abi) into $DESTDIR$PREFIX"
