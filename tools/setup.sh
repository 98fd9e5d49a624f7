#!/usr/bin/env bash
# Installs everything the build, the demo and the tests need on a fresh Debian 12
# machine (root). Idempotent: a second run checks and returns in a few seconds.
#
# Debian packages: the C toolchain, OpenSSL headers, what xsk-rs's libxdp build needs
# (clang llvm m4 libelf-dev zlib1g-dev libpcap-dev pkg-config — NOT libbpf-dev, which
# makes libxdp build against the wrong libbpf headers), iproute2/nftables/ethtool for
# the network-namespace test bed, python3-venv for the Python package tests.
# Tools: cbindgen (header generation and drift check), Python `websockets` (the
# third-party interop server).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

PKGS=(build-essential pkg-config libssl-dev clang llvm m4 libelf-dev zlib1g-dev libpcap-dev
      iproute2 nftables ethtool iputils-ping procps python3-venv python3-pip openssl libcap2-bin
      libclang-rt-14-dev python3-prometheus-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages: ${missing[*]} — run this script as root (or apt-get install them)"
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if dpkg-query -W -f='${Status}' libbpf-dev 2>/dev/null | grep -q "install ok installed"; then
  log "warning: libbpf-dev is installed; building with FORCE_SUBDIR_LIBBPF=1 so libxdp uses its own libbpf"
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cbindgen >/dev/null || [ "$(cbindgen --version | awk '{print $2}')" != "0.29.4" ]; then
  log "installing cbindgen 0.29.4"
  cargo install --quiet --locked cbindgen --version 0.29.4
fi

# A private venv for the Python side (test servers, the ctypes package).
VENV=${PIPELINE_VENV:-/opt/libpipeline-venv}
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import websockets' 2>/dev/null; then
  log "installing websockets into $VENV"
  "$VENV/bin/pip" install --quiet 'websockets>=12'
fi
# numpy: python/tests checks that numpy views of released payloads never read reused
# shared memory.
if ! "$VENV/bin/python" -c 'import numpy' 2>/dev/null; then
  log "installing numpy into $VENV"
  "$VENV/bin/pip" install --quiet numpy
fi
log "ok"
