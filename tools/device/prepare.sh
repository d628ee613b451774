#!/usr/bin/env bash
# Run here, before a GPU session's first device call (tools/device/README.md); idempotent.
#   tools/device/prepare.sh [--all-data] [--budget 8m] [--profile full]
# 1. .whl/: the wheels the device lacks (Python 3.12, manylinux x86_64), from PyPI;
# 2. .devdata/call-N/: the archives the next pieces need (from $RETHINK_DATA, checked against its
#    SHA256SUMS), Tiny ImageNet cut into parts, so that repo + one call's files < 64 MiB;
# 3. prints the device calls (command, carry, timeout_s) and the budget arithmetic; also in
#    .devdata/calls.json. Both folders are git-ignored.
set -euo pipefail

die() { echo "error: tools/device/prepare.sh: $*" >&2; exit 1; }
ROOT=$(git rev-parse --show-toplevel 2>/dev/null) || die "not in a git checkout: run it inside the repository"
cd "$ROOT"
[ -f lib/rethink/pieces.py ] || die "$ROOT is not this book's repository (no lib/rethink/pieces.py)"

DATA_ARG=(--data needed) BUDGET=auto PROFILE=full
while [ $# -gt 0 ]; do
  case $1 in
    --all-data) DATA_ARG=(--data all); shift ;;
    --budget) BUDGET=${2:?}; shift 2 ;;
    --profile) PROFILE=${2:?}; shift 2 ;;
    *) die "unknown option $1 (usage: tools/device/prepare.sh [--all-data] [--budget 8m] [--profile full])" ;;
  esac
done

SRC=${DEVICE_DATA_SRC:-${RETHINK_DATA:-}}
[ -n "$SRC" ] && [ -f "$SRC/SHA256SUMS" ] \
  || die "set RETHINK_DATA (or DEVICE_DATA_SRC) to the folder of the dataset archives and their SHA256SUMS"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYTHONPATH=lib "$PYTHON" -c "import rethink.pieces" 2>/dev/null \
  || die "$PYTHON cannot import rethink.pieces: make setup (or PYTHON=/path/to/venv/bin/python)"

# ---- wheels: one version of each; their dependencies are on the machine (plan_calls.py checks)
WHEELS=(pycocotools==2.0.11 faster-coco-eval==1.8.0 imagecorruptions==1.1.2)
mkdir -p .whl
for pin in "${WHEELS[@]}"; do
  name=${pin%%==*}; ver=${pin##*==}; stem=${name//-/_}
  for w in .whl/"$stem"-*.whl; do   # other versions stop the install there
    [ -e "$w" ] && [[ "$w" != .whl/"$stem-$ver"-* ]] && rm -f "$w"
  done
  compgen -G ".whl/$stem-$ver-*.whl" >/dev/null && continue
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin" \
    || die "pip download $pin failed (PyPI unreachable?): fix the network or copy the wheel into .whl/"
done

# ---- the commit the records will name (the copy on the device has no .git)
COMMIT=$(git rev-parse HEAD)
DIRTY=0
if [ -n "$(git status --porcelain --untracked-files=no -- . ':!book/executed' ':!results' ':!benchmarks/results')" ]; then
  DIRTY=1
  echo "warning: tools/device/prepare.sh: uncommitted code changes: the records will say commit ${COMMIT:0:12} dirty; commit first, then re-run" >&2
fi

unset RETHINK_RESULTS   # plan against the committed store: the one the device's copy carries
RETHINK_DATA=$SRC PYTHONPATH=lib "$PYTHON" tools/device/plan_calls.py --src "$SRC" --out .devdata \
  "${DATA_ARG[@]}" --profile "$PROFILE" --budget "$BUDGET" --wheels .whl --commit "$COMMIT" --dirty "$DIRTY"
