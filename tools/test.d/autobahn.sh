#!/usr/bin/env bash
# Autobahn|Testsuite (cases 1.* to 10.*, 12.* and 13.* (permessage-deflate), ws:// and
# wss://) against Pipeline (the product's path); see docs/conformance.md. Fails if any
# case FAILED. About 15 minutes on 2 cores (12.* and 13.* are 216 ping-pong cases of 1000
# messages each per scheme; docs/conformance.md says where the time goes).
set -euo pipefail
exec bash "$(dirname "$0")/../autobahn.sh" --mode both
