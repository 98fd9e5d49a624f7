#!/usr/bin/env bash
# Autobahn|Testsuite (cases 1.* to 10.*, 12.* and 13.* (permessage-deflate), ws:// and
# wss://) against Pipeline (the product's path); see docs/conformance.md. Fails if any
# case FAILED. About RUNTIME on 2 cores (the compression cases echo ~5 GB each way).
set -euo pipefail
exec bash "$(dirname "$0")/../autobahn.sh" --mode both
