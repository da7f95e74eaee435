#!/usr/bin/env bash
# The long crash loop: SIGKILL the ingesting child 1,000 times (release build) and print the
# figures: cycles, acknowledged commits, max lost acknowledged commits (must be 0), reads
# verified. See tests/crash.rs.
#
#   .ci/crash-loop.sh                 # 1,000 cycles, the default seed
#   CYCLES=200 SEED=0x1234 .ci/crash-loop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export STRATAKV_CRASH_CYCLES="${CYCLES:-1000}"
if [[ -n "${SEED:-}" ]]; then
    export STRATAKV_CRASH_SEED="$SEED"
fi
exec cargo test --release --test crash -- --nocapture \
    sigkill_at_random_moments_loses_no_acknowledged_commit_and_exposes_no_partial_batch
