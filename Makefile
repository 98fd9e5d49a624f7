# The C/C++ install of libpipeline, under its installed name wspipe (docs/c-api.md):
#
#   make                                  cargo build --release --lib (libpipeline.so/.a)
#   make install PREFIX=/opt/wspipe       headers, libwspipe.so.* (+ SONAME links), .a,
#                                         pkg-config (wspipe, wspipe-static), CMake package
#   make install PREFIX=/usr DESTDIR=pkgroot LIBDIR=/usr/lib/x86_64-linux-gnu
#
# CARGO_TARGET_DIR is honoured. The Rust tests: cargo test (see README.md).
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
CARGO ?= cargo
export PREFIX LIBDIR INCLUDEDIR DESTDIR CARGO_TARGET_DIR

all:
	$(CARGO) build --release --lib

install: all
	sh tools/install.sh

.PHONY: all install
