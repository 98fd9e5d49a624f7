#!/bin/sh
# Write libpipeline.pc.
#   tools/pkgconfig/gen-pc.sh [OUTDIR]           in-tree: libdir = the repo's target/release
#                                                (or $CARGO_TARGET_DIR/release), includedir = include/
#   PREFIX=/usr/local tools/pkgconfig/gen-pc.sh  installed layout: $PREFIX/lib, $PREFIX/include
# OUTDIR defaults to <libdir>/pkgconfig. Then: PKG_CONFIG_PATH=OUTDIR pkg-config --cflags --libs libpipeline
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/Cargo.toml" | head -n1)
if [ -n "${PREFIX:-}" ]; then
  prefix=$PREFIX; libdir=$PREFIX/lib; includedir=$PREFIX/include
else
  prefix=$here; libdir=${CARGO_TARGET_DIR:-$here/target}/release; includedir=$here/include
fi
out=${1:-$libdir/pkgconfig}
mkdir -p "$out"
sed -e "s|@prefix@|$prefix|g" -e "s|@libdir@|$libdir|g" -e "s|@includedir@|$includedir|g" \
    -e "s|@version@|$version|g" "$here/tools/pkgconfig/libpipeline.pc.in" > "$out/libpipeline.pc.tmp"
# Replace only when different, so that make does not relink for nothing.
if cmp -s "$out/libpipeline.pc.tmp" "$out/libpipeline.pc"; then
  rm -f "$out/libpipeline.pc.tmp"
else
  mv "$out/libpipeline.pc.tmp" "$out/libpipeline.pc"
fi
echo "$out/libpipeline.pc"
