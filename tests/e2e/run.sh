#!/usr/bin/env bash
# `make e2e`: build (or reuse) what the real node needs, bring the node up, run the e2e tests,
# and tear the node down whatever happens (the EXIT/INT/TERM trap, on top of the fixture's own
# teardown; both are idempotent). A node left by a crashed run is torn down first.
#
#   tests/e2e/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
start=$SECONDS
tests/controlplane/build.sh
tests/e2e/build.sh >/dev/null
echo "e2e: binaries and images ready in $((SECONDS - start))s"
teardown() { "$py" -m tests.e2e.node down | sed 's/^/  /' || true; }
if [[ -e /var/tmp/kucero-e2e ]]; then
    echo "e2e: a node from an earlier run is still here; tearing it down first"
    teardown
fi
trap 'status=$?; trap - EXIT INT TERM; teardown; exit $status' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$py" -m pytest tests/e2e -m e2e -p no:cacheprovider -v "$@"
echo "e2e: done in $((SECONDS - start))s"
