#!/usr/bin/env bash
# Model-checks the protocols with spin: each model must verify, and each deliberately broken
# variant must fail (so the models can fail). Needs spin and a C compiler.
#   bash models/check.sh [WORK_DIR]
set -euo pipefail

MODELS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/sps-spin.XXXXXX")}
mkdir -p "$WORK"
cd "$WORK"
status=0

# check MODEL EXPECT [SPIN_DEFINES...]: EXPECT is "pass" or "fail".
check() {
    local model=$1 expect=$2
    shift 2
    rm -f pan pan.* ./*.trail
    spin "$@" -a "$MODELS/$model" >spin.log || { cat spin.log; echo "spin could not read $model $*"; status=1; return; }
    gcc -O2 -DSAFETY -o pan pan.c
    ./pan -m1000000 >pan.log 2>&1 || true
    local errors states
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.log)
    states=$(sed -n 's/^ *\([0-9e+.]*\) states, stored.*/\1/p' pan.log)
    if grep -q 'max search depth too small' pan.log; then
        echo "FAIL  $model $*: the search was cut short (raise -m)"
        status=1
    elif [ "$expect" = pass ] && [ "$errors" = 0 ]; then
        echo "ok    $model $*: verified, $states states"
    elif [ "$expect" = fail ] && [ -n "$errors" ] && [ "$errors" != 0 ]; then
        echo "ok    $model $*: broken variant caught: $(grep -m1 -E 'assertion violated|invalid end state' pan.log)"
    else
        echo "FAIL  $model $*: expected to $expect, got errors: ${errors:-none}"
        cat pan.log
        status=1
    fi
}

check seqlock.pml pass
check seqlock.pml pass -DRESYNC_LATEST
check seqlock.pml pass -DN=3 -DM=7
check seqlock.pml fail -DNO_RECHECK
check wakeup.pml pass
check wakeup.pml pass -DM=4
check wakeup.pml fail -DNO_RECHECK
check wakeup.pml fail -DLOAD_BEFORE_STORE
exit "$status"
