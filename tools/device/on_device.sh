#!/usr/bin/env bash
# What runs on the GPU machine, from the repository root of its copy (tools/device/README.md):
#   bash tools/device/on_device.sh stash .devdata/call-N   check call N's files, keep them in $DEVICE_PARTS
#   bash tools/device/on_device.sh assemble                 rebuild the archives, check SHA-256, into $DEVICE_DATA
#   bash tools/device/on_device.sh install                  the wheels of .whl/ into $DEVICE_SITE
#   bash tools/device/on_device.sh run --budget 480s --commit SHA [--profile full] [--dirty 0|1]
#                                      [--data DIR] [-- MORE PIECE ARGS]
# Defaults: DEVICE_PARTS=/tmp/parts DEVICE_DATA=/tmp/data DEVICE_SITE=/tmp/site DEVICE_CACHE=/tmp/rc
# PYTHON=python3 (/tmp survives between calls while the machine stays warm). Needs no network.
# Every failure is one line, "error: tools/device/on_device.sh <sub-command>: <what>; <fix>".
set -euo pipefail

PARTS=${DEVICE_PARTS:-/tmp/parts}
DATA=${DEVICE_DATA:-/tmp/data}
SITE=${DEVICE_SITE:-/tmp/site}
CACHE=${DEVICE_CACHE:-/tmp/rc}
PY=${PYTHON:-python3}
CMD=${1:-}
[ $# -gt 0 ] && shift

die() { echo "error: tools/device/on_device.sh ${CMD:-}: $*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
expected() { awk -v n="$2" '$2 == n || $2 == "*" n { print $1; exit }' "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
size_of() { stat -c %s "$1"; }

stash() {
  local dir=${1:-} n f want got total=0
  [ -n "$dir" ] || die "usage: stash .devdata/call-N"
  [ -d "$dir" ] || die "$dir is not in this copy: name it in this call's carry (as prepare.sh printed)"
  [ -f "$dir/LAYOUT" ] && [ -f "$dir/SHA256SUMS" ] || die "$dir lacks LAYOUT or SHA256SUMS: re-run tools/device/prepare.sh"
  n=${dir%/}; n=${n##*call-}
  [[ "$n" =~ ^[0-9]+$ ]] || die "$dir: expected a folder named call-N"
  mkdir -p "$PARTS"
  if [ -f "$PARTS/LAYOUT" ] && [ "$(sha_of "$PARTS/LAYOUT")" != "$(sha_of "$dir/LAYOUT")" ]; then
    die "$dir/LAYOUT differs from the earlier calls' (prepare.sh was re-run between calls): start again from call 1"
  fi
  while read -r c f _ _; do
    [ "$c" = "$n" ] || continue
    [ -f "$dir/$f" ] || die "$dir/$f is missing: carry the whole folder $dir"
    want=$(expected "$dir/SHA256SUMS" "$f"); got=$(sha_of "$dir/$f")
    [ "$got" = "$want" ] || die "$dir/$f: SHA-256 ${got:0:12}... is not ${want:0:12}...: re-run prepare.sh, then this call"
    total=$((total + $(size_of "$dir/$f")))
    mv -f "$dir/$f" "$PARTS/$f"
  done < <(grep -v '^#' "$dir/LAYOUT")
  cp "$dir/LAYOUT" "$dir/SHA256SUMS" "$PARTS/"
  while read -r c f a _; do   # the earlier calls' files must still be here
    [ "$c" -lt "$n" ] || continue
    [ -f "$PARTS/$f" ] || [ -f "$DATA/$a" ] || die "$PARTS/$f (call $c) is gone: this is a fresh machine (it went cold between calls): start again from call 1"
  done < <(grep -v '^#' "$dir/LAYOUT")
  local calls; calls=$(grep -v '^#' "$dir/LAYOUT" | awk '{print $1}' | sort -n | tail -1)
  echo "stash: call $n of $calls verified ($(mib $total)); $PARTS holds $(du -sm "$PARTS" | cut -f1) MiB"
}

assemble() {
  local layout=$PARTS/LAYOUT sums=$PARTS/SHA256SUMS a f want got tmp n=0
  [ -f "$layout" ] || die "no $layout: run the stash calls first (a fresh machine has none: start again from call 1)"
  mkdir -p "$DATA"
  for a in $(grep -v '^#' "$layout" | awk '!seen[$3]++ { print $3 }'); do
    want=$(expected "$sums" "$a")
    [ -n "$want" ] || die "$sums has no line for $a: re-run tools/device/prepare.sh"
    if [ -f "$DATA/$a" ] && [ "$(sha_of "$DATA/$a")" = "$want" ]; then n=$((n + 1)); continue; fi
    tmp="$DATA/.$a.tmp"
    : > "$tmp"
    for f in $(grep -v '^#' "$layout" | awk -v a="$a" '$3 == a { print $4, $2 }' | sort -n | cut -d' ' -f2); do
      [ -f "$PARTS/$f" ] || { rm -f "$tmp"; die "$PARTS/$f is missing: the machine went cold between calls; start again from call 1"; }
      cat "$PARTS/$f" >> "$tmp"
    done
    got=$(sha_of "$tmp")
    [ "$got" = "$want" ] || { rm -f "$tmp"; die "$a: SHA-256 of the joined parts ${got:0:12}... is not ${want:0:12}... (SHA256SUMS): re-run prepare.sh and the calls"; }
    mv -f "$tmp" "$DATA/$a"
    for f in $(grep -v '^#' "$layout" | awk -v a="$a" '$3 == a { print $2 }'); do rm -f "$PARTS/$f"; done
    n=$((n + 1))
  done
  echo "assemble: $n archive(s) in $DATA, SHA-256 checked: $(cd "$DATA" && compgen -G "*.tar.gz" | tr '\n' ' ')"
}

install() {
  ls .whl/*.whl >/dev/null 2>&1 || die "no wheels in .whl/: name .whl in this call's carry (tools/device/prepare.sh downloads them)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || die "pip install of .whl/*.whl into $SITE failed (above): re-run prepare.sh (Python 3.12 manylinux wheels)"
  PYTHONPATH="$SITE" "$PY" -c "
import importlib.util as u, pathlib, pycocotools.mask, faster_coco_eval
s = u.find_spec('imagecorruptions')
assert s and (pathlib.Path(s.origin).parent / 'frost').is_dir(), 'imagecorruptions frost/ not found'
" || die "the installed wheels do not import from $SITE (above): check .whl/ against tools/device/README.md"
  echo "install: $(cd .whl && ls -- *.whl | sed 's/-py3-none.*//; s/-cp3.*//' | tr '\n' ' ')into $SITE"
}

run() {
  local profile=full budget="" commit=${RETHINK_COMMIT:-} dirty=${RETHINK_DIRTY:-0} data=$DATA extra=() rc
  while [ $# -gt 0 ]; do
    case $1 in
      --profile) profile=${2:?}; shift 2 ;;
      --budget) budget=${2:?}; shift 2 ;;
      --commit) commit=${2:?}; shift 2 ;;
      --dirty) dirty=${2:?}; shift 2 ;;
      --data) data=${2:?}; shift 2 ;;
      --) shift; extra=("$@"); break ;;
      *) die "unknown option $1 (see the header of tools/device/on_device.sh)" ;;
    esac
  done
  [ -n "$budget" ] || die "--budget is needed (prepare.sh prints it, e.g. --budget 480s)"
  [ -n "${OUT:-}" ] || die "OUT is not set: the device tool sets it; elsewhere export OUT=/a/folder"
  [ -f lib/rethink/pieces.py ] || die "run it from the repository root (no lib/rethink/pieces.py here)"
  if [ -z "$commit" ] && [ -d .git ]; then commit=$(git rev-parse HEAD 2>/dev/null || true); fi
  [[ "$commit" =~ ^[0-9a-f]{7,40}$ ]] || die "--commit SHA is needed (the copy has no .git): prepare.sh prints it"
  [[ "$dirty" =~ ^[01]$ ]] || die "--dirty must be 0 or 1"
  compgen -G "$data/*.tar.gz" >/dev/null || compgen -G "$data/*.zip" >/dev/null || die "no archives in $data: run assemble first (or --data DIR)"
  if [ "$data" = "$DATA" ] && [ -f "$PARTS/LAYOUT" ]; then
    for a in $(grep -v '^#' "$PARTS/LAYOUT" | awk '!seen[$3]++ { print $3 }'); do
      [ -f "$data/$a" ] || die "$data/$a is missing: run assemble first"
    done
  fi
  mkdir -p "$OUT" "$CACHE"
  export RETHINK_DATA=$data RETHINK_CACHE=$CACHE RETHINK_COMMIT=$commit RETHINK_DIRTY=$dirty
  export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
  export PYTHONPATH="$PWD/lib:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  unset RETHINK_RESULTS   # the store is the copy's results/: what is done, and where records go
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu,temperature.gpu \
    --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not available')"
  if [ "$profile" = full ] || [ "$profile" = paper ]; then
    "$PY" -c "
import importlib.util as u, sys, torch
if not torch.cuda.is_available():
    sys.exit('python3\'s torch ' + torch.__version__ + ' sees no GPU: profile $profile is not run on a CPU')
if not ((u.find_spec('pycocotools') or u.find_spec('faster_coco_eval')) and u.find_spec('imagecorruptions')):
    sys.exit('pycocotools/faster_coco_eval or imagecorruptions is not importable: run install first (carry .whl)')
print('torch', torch.__version__, 'on', torch.cuda.get_device_name())
" || die "not ready for profile $profile (the line above says why)"
    compgen -G "benchmarks/results/suite-full-*.json" >/dev/null \
      || echo "run: the benchmark piece (0) is not done: --next runs it first (the plan's highest priority)"
  fi
  echo "run: piece --profile $profile --next --budget $budget${extra[*]:+ ${extra[*]}} (commit ${commit:0:12}, dirty $dirty, data $data)"
  set +e
  "$PY" -m rethink.book piece --profile "$profile" --next --budget "$budget" --out "$OUT/bundle.tar.gz" \
    ${extra[@]+"${extra[@]}"} 2>&1 | tee "$OUT/piece.log"
  rc=${PIPESTATUS[0]}
  set -e
  [ -f "$OUT/bundle.tar.gz" ] || die "no bundle written (piece exited $rc; nothing ran? see $OUT/piece.log)"
  echo "run: piece exited $rc after ${SECONDS}s; $OUT/bundle.tar.gz ($(mib "$(size_of "$OUT/bundle.tar.gz")")), $OUT/piece.log"
  return "$rc"
}

case $CMD in
  stash) stash "$@" ;;
  assemble) assemble ;;
  install) install ;;
  run) run "$@" ;;
  *) die "unknown sub-command '${CMD}': stash DIR | assemble | install | run --budget B --commit SHA" ;;
esac
