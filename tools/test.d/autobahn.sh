#!/usr/bin/env bash
# Autobahn|Testsuite (cases 1.* to 10.*, ws:// and wss://) against Pipeline (the product's path); see
# docs/conformance.md. Fails if any case FAILED. About a minute on 2 cores.
set -euo pipefail
exec bash "$(dirname "$0")/../autobahn.sh" --mode both
