"""Plan a GPU session's device calls (tools/device/README.md); run by tools/device/prepare.sh.

    python tools/device/plan_calls.py --src DATA_DIR --out .devdata [--data needed|all]
        [--budget auto|8m] [--profile full] [--wheels .whl] [--commit SHA --dirty 0|1]

1. Which archives: those of the pieces that ``piece --profile full --next --budget B`` can pick
   on the device (the same selection as rethink.pieces.run_pieces: the committed store, the
   estimates scaled by earlier runs on ``--device``, every budget from B - WINDOW_S to B, since
   the device spends a few seconds planning before it selects), or ``--data all``.
2. How they travel: the device sends at most 64 MiB of working tree a call (the repository's
   tracked and untracked-not-ignored files, plus what ``carry`` names). Each call carries one
   folder ``.devdata/call-N`` of at most ``64 MiB - repo - margin``: whole archives where they
   fit (first fit, largest first), the largest archive cut into parts that fill what is left
   (the wheels go in the last call). Every folder holds ``LAYOUT`` (call, file, archive, part
   index) and ``SHA256SUMS`` (every file and every whole archive; the archives' values are
   the source folder's SHA256SUMS), which tools/device/on_device.sh checks.
3. The budget arithmetic (``budget()``) and the exact calls, printed and written to
   ``.devdata/calls.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

MIB = 1 << 20
TREE_LIMIT = 64 * MIB            # working tree a call (device README, Limits)
MARGIN = 3 * MIB                 # room for the tree growing between prepare and the calls
COMMAND_MAX_S = 600              # one command's run
DEVICE_S = 900                   # device time a session, start-up, idle and every call counted
START_S = 120                    # the first call starts the machine (1-2 min)
DATA_CALL_S = 30                 # a data call: <= 64 MiB in, stash (a copy and a SHA-256), turn-around
RUN_OVERHEAD_S = 40              # the run call's stash, assemble, install, imports, planning
GRACE_S = 60                     # the last piece may overrun its estimate: the command's limit is later
CLOSE_S = 20                     # the bundle coming back, give_back
SPARE_S = 60                     # what is never planned for
WINDOW_S = 30                    # selections at budgets B - WINDOW_S .. B (the device plans first)
DEVICE = "cuda: NVIDIA H200 x1"  # rethink.results.store.device_description() there (KINDS.md)
# the benchmark piece reads CIFAR-10 (time to 94%, the -C images) and Tiny ImageNet (the
# detection scenes): benchmarks/suite.py, cifar10_time_to_94.py, detection_throughput.py
BENCHMARK_DATA = ("cifar10-jpg.tar.gz", "tiny-imagenet-200-sub400.tar.gz")
ON_DEVICE = "bash tools/device/on_device.sh"


def fail(msg: str) -> None:
    sys.exit(f"error: tools/device/plan_calls.py: {msg}")


def parse_duration(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min)?\s*", text)
    if not m:
        fail(f"--budget {text!r}: expected auto, or a duration like 8m or 480s")
    return int(float(m.group(1)) * (1 if m.group(2) == "s" else 60))


def budget(data_calls: int) -> dict:
    """The run call's ``--budget`` B and ``timeout_s`` after ``data_calls`` calls that only carry data."""
    by_session = DEVICE_S - START_S - data_calls * DATA_CALL_S - RUN_OVERHEAD_S - GRACE_S - CLOSE_S - SPARE_S
    by_command = COMMAND_MAX_S - RUN_OVERHEAD_S - GRACE_S
    b = max(0, min(by_session, by_command)) // 30 * 30
    timeout = RUN_OVERHEAD_S + b + GRACE_S
    text = (f"B = min({DEVICE_S} device s - {START_S} start-up - {data_calls} data call(s) x {DATA_CALL_S} - "
            f"{RUN_OVERHEAD_S} run-call overhead - {GRACE_S} overrun grace - {CLOSE_S} bundle back and give_back - "
            f"{SPARE_S} spare = {by_session}, {COMMAND_MAX_S} s a command - {RUN_OVERHEAD_S} - {GRACE_S} = "
            f"{by_command}) = {b} s, rounded down to 30 s; the run call's timeout_s = {RUN_OVERHEAD_S} + {b} + "
            f"{GRACE_S} = {timeout}; worst case {START_S} + {data_calls * DATA_CALL_S} + {timeout} + {CLOSE_S} = "
            f"{START_S + data_calls * DATA_CALL_S + timeout + CLOSE_S} of {DEVICE_S} s")
    return {"budget_s": b, "timeout_s": timeout, "arithmetic": text}


# ------------------------------------------------------------------ which archives


def _data_ids(obj, out: set) -> None:
    """Archive file names of the ``data`` ids in a config ('cifar10-jpg.tar.gz:79f295956b4f')."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "data" and isinstance(v, dict):
                out.update(str(x).split(":")[0] for x in v.values())
            else:
                _data_ids(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _data_ids(v, out)


def next_pieces(profile: str, budget_s: int, device: str = DEVICE, window_s: int = WINDOW_S):
    """(pieces that ``piece --next --budget budget_s`` may run on ``device``, their archives)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))
    from rethink import pieces
    from rethink.results.store import ResultsStore

    plan = pieces.make_plan(profile)
    store = ResultsStore()
    states = pieces.piece_states(plan, store)
    scale, _ = pieces.measured_scale(plan, store, device)
    chosen: dict[int, object] = {}
    for b in range(max(1, budget_s - window_s), budget_s + 1):
        for p in pieces.select_next(plan, states, b, scale=scale)[0]:
            chosen[p.id] = p
    archives: set = set()
    for p in chosen.values():
        if p.benchmark:
            archives.update(BENCHMARK_DATA)
        for n in p.cells + p.retrains:
            _data_ids(n.config, archives)
    remaining = {s.piece.id: s.remaining_s * scale for s in states}
    return [(p.id, p.title, remaining[p.id]) for p in sorted(chosen.values(), key=lambda p: p.id)], archives


# ------------------------------------------------------------------ packing


def pack(sizes: dict[str, int], capacity: int, last_reserve: int = 0) -> list[list[tuple]]:
    """Calls of (file, archive, part index, offset, length), each <= capacity (the last <=
    capacity - last_reserve). Whole archives go first fit, largest first; the largest archive
    (and any larger than a call) is cut into parts that fill the room left, in call order."""
    if capacity <= 0:
        fail(f"no room for data in a call (capacity {capacity} bytes): the repository is too large")
    names = sorted(sizes, key=lambda n: (-sizes[n], n))
    split = {n for n in names if sizes[n] > capacity - last_reserve} | ({names[0]} if names else set())
    whole = [n for n in names if n not in split]
    total = sum(sizes.values()) + last_reserve
    for n_calls in range(max(1, math.ceil(total / capacity)), len(names) + total // capacity + 3):
        caps = [capacity] * (n_calls - 1) + [capacity - last_reserve]
        calls: list[list[tuple]] = [[] for _ in caps]
        free = list(caps)
        ok = True
        for n in whole:
            i = next((i for i, f in enumerate(free) if f >= sizes[n]), None)
            if i is None:
                ok = False
                break
            calls[i].append((n, n, 0, 0, sizes[n]))
            free[i] -= sizes[n]
        for n in sorted(split, key=lambda n: (-sizes[n], n)):
            offset, index = 0, 0
            for i in range(len(caps)):
                take = min(free[i], sizes[n] - offset)
                if take <= 0 or (take < capacity // 50 and take < sizes[n] - offset):
                    continue   # no sliver parts: a gap under 2% of a call is left empty
                calls[i].append((f"{n}.part-{index:02d}", n, index, offset, take))
                free[i] -= take
                offset += take
                index += 1
            ok = ok and offset == sizes[n]
        if ok:
            for call in calls:   # a split archive's only part is the whole archive
                for j, (f, a, i, o, ln) in enumerate(call):
                    if a in split and ln == sizes[a]:
                        call[j] = (a, a, 0, 0, ln)
            return [c for c in calls if c] or [[]]
    fail("could not pack the archives into calls")


def _sha_file(path: Path, offset: int = 0, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = os.path.getsize(path) - offset if length is None else length
        while left > 0:
            chunk = f.read(min(left, 8 * MIB))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def read_sums(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0]
    return out


def write_calls(calls: list[list[tuple]], src: Path, out: Path, sums: dict[str, str]) -> dict[str, str]:
    """``out/call-N/`` with the files, ``LAYOUT`` and ``SHA256SUMS`` (idempotent: a file of the
    right size and SHA-256 is kept); returns every file's SHA-256."""
    out.mkdir(parents=True, exist_ok=True)
    archives = sorted({a for call in calls for _, a, *_ in call})
    for a in archives:
        if a not in sums:
            fail(f"{src / 'SHA256SUMS'} has no line for {a}: add it (sha256sum {a} >> SHA256SUMS)")
        got = _sha_file(src / a)
        if got != sums[a]:
            fail(f"{src / a}: SHA-256 {got[:12]}... differs from SHA256SUMS's {sums[a][:12]}...: copy it again")
    file_sums = {a: sums[a] for a in archives}
    layout = []
    for k, call in enumerate(calls, 1):
        folder = out / f"call-{k}"
        folder.mkdir(exist_ok=True)
        for f, a, i, o, ln in call:
            file_sums[f] = sums[a] if (f == a) else _sha_file(src / a, o, ln)
            layout.append(f"{k} {f} {a} {i}")
            target = folder / f
            if target.is_file() and target.stat().st_size == ln and _sha_file(target) == file_sums[f]:
                continue
            tmp = target.with_name(f".{target.name}.tmp")
            with open(src / a, "rb") as r, open(tmp, "wb") as w:
                r.seek(o)
                left = ln
                while left > 0:
                    chunk = r.read(min(left, 8 * MIB))
                    w.write(chunk)
                    left -= len(chunk)
            os.replace(tmp, target)
    text_layout = "# call file archive part (tools/device/plan_calls.py)\n" + "\n".join(layout) + "\n"
    text_sums = "".join(f"{s}  {n}\n" for n, s in sorted(file_sums.items()))
    keep = {f"call-{k}" for k in range(1, len(calls) + 1)}
    for k, call in enumerate(calls, 1):
        folder = out / f"call-{k}"
        (folder / "LAYOUT").write_text(text_layout)
        (folder / "SHA256SUMS").write_text(text_sums)
        wanted = {f for f, *_ in call} | {"LAYOUT", "SHA256SUMS"}
        for p in folder.iterdir():
            if p.name not in wanted:
                p.unlink()
    for p in out.glob("call-*"):
        if p.is_dir() and p.name not in keep:
            for q in p.iterdir():
                q.unlink()
            p.rmdir()
    return file_sums


def tree_bytes(root: Path) -> int:
    """What every call sends besides ``carry``: tracked and untracked-not-ignored files, shared/."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                           capture_output=True).stdout.split(b"\0")
    total = sum(os.path.getsize(root / n.decode()) for n in names if n and (root / n.decode()).is_file())
    shared = root / "shared"
    if shared.is_dir():
        total += sum(p.stat().st_size for p in shared.rglob("*") if p.is_file())
    return total


# names whose import a machine package provides under another distribution name
ALIASES = {"opencv-python": "opencv-python-headless", "opencv-contrib-python": "opencv-python-headless"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def machine_packages(path: Path) -> set[str]:
    return {norm(ln.strip()) for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def wheel_needs(wheels: list[str], machine: set[str]) -> list[str]:
    """'wheel: needs X' for every non-extra Requires-Dist that is neither on the machine nor a wheel."""
    import zipfile

    have = machine | {norm(Path(w).name.split("-")[0]) for w in wheels}
    out = []
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            for line in z.read(meta).decode().splitlines():
                if not line.startswith("Requires-Dist:") or "extra ==" in line:
                    continue
                dep = norm(re.split(r"[\s;(<>=!~\[]", line.split(":", 1)[1].strip())[0])
                if dep not in have and ALIASES.get(dep) not in have:
                    out.append(f"{Path(w).name}: needs {dep}")
    return out


def calls_json(calls: list[list[tuple]], sizes: dict[str, int], wheels: list[str], profile: str, b: dict,
               commit: str, dirty: str) -> list[dict]:
    out = []
    for k, call in enumerate(calls, 1):
        carried = sum(ln for *_, ln in call)
        last = k == len(calls)
        cmd = f"{ON_DEVICE} stash .devdata/call-{k}"
        carry = [f".devdata/call-{k}"] if call else []
        if last:
            cmd = (f"{cmd} && " if call else "") + (
                f"{ON_DEVICE} assemble && {ON_DEVICE} install && {ON_DEVICE} run --profile {profile} "
                f"--budget {b['budget_s']}s --commit {commit} --dirty {dirty}")
            carry += [".whl"] if wheels else []
        out.append({"call": k, "command": cmd, "carry": carry, "timeout_s": b["timeout_s"] if last else 60,
                    "data_bytes": carried, "files": [f for f, *_ in call]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="folder with the archives and SHA256SUMS")
    ap.add_argument("--out", default=".devdata", help="where the call folders go (default .devdata)")
    ap.add_argument("--data", choices=["needed", "all"], default="needed")
    ap.add_argument("--archives", help="comma-separated archive names instead of --data (tests)")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--budget", default="auto", help="auto (the arithmetic below), or e.g. 8m")
    ap.add_argument("--device", default=DEVICE, help=f"the device's description (default {DEVICE!r})")
    ap.add_argument("--wheels", default=".whl", help="the wheels folder carried by the last call")
    ap.add_argument("--repo-bytes", type=int, help="the tree's size (default: measured with git)")
    ap.add_argument("--tree-limit", type=int, default=TREE_LIMIT, help="bytes a call may send (default 64 MiB)")
    ap.add_argument("--margin", type=int, default=MARGIN, help="bytes kept free a call (default 3 MiB)")
    ap.add_argument("--machine-packages", default=str(Path(__file__).with_name("machine-packages.txt")))
    ap.add_argument("--commit", default="COMMIT")
    ap.add_argument("--dirty", default="0", choices=["0", "1"])
    args = ap.parse_args(argv)

    root = Path.cwd()
    src, out = Path(args.src), Path(args.out)
    if not (src / "SHA256SUMS").is_file():
        fail(f"{src}/SHA256SUMS not found: --src (or RETHINK_DATA) must be the folder of the archives with their SHA256SUMS")
    sums = read_sums(src / "SHA256SUMS")
    wheels = sorted(str(p) for p in Path(args.wheels).glob("*.whl")) if Path(args.wheels).is_dir() else []
    wheel_bytes = sum(os.path.getsize(w) for w in wheels)
    needs = wheel_needs(wheels, machine_packages(Path(args.machine_packages)))
    if needs:
        fail("the machine lacks what these wheels need: " + "; ".join(needs) + " (download those wheels into "
             f"{args.wheels} too, see tools/device/README.md)")
    repo = args.repo_bytes if args.repo_bytes is not None else tree_bytes(root)
    capacity = args.tree_limit - repo - args.margin

    pieces_run: list = []
    if args.archives:
        names = [a for a in args.archives.split(",") if a]
    elif args.data == "all":
        names = sorted(sums)
    else:   # the budget depends on the number of calls, which depends on the archives: settle it
        b0, seen = budget(2)["budget_s"] if args.budget == "auto" else parse_duration(args.budget), set()
        while b0 not in seen:
            seen.add(b0)
            pieces_run, names = next_pieces(args.profile, b0, args.device)
            if not pieces_run:
                fail(f"no piece of profile {args.profile!r} is left to run at --budget {b0}s: "
                     f"see `python -m rethink.book plan --profile {args.profile}`")
            names = sorted(names)
            if args.budget != "auto" or any(not (src / n).is_file() for n in names):
                break
            n_calls = len(pack({n: os.path.getsize(src / n) for n in names}, capacity, wheel_bytes))
            b0 = budget(n_calls - 1)["budget_s"]
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        fail(f"{', '.join(missing)} not in {src}: put the archive(s) there (RETHINK_DATA)")
    sizes = {n: os.path.getsize(src / n) for n in names}
    calls = pack(sizes, capacity, wheel_bytes)
    file_sums = write_calls(calls, src, out, sums)
    b = budget(len(calls) - 1)
    if args.budget != "auto":
        b = {**b, "budget_s": parse_duration(args.budget)}
        b["timeout_s"] = min(COMMAND_MAX_S, RUN_OVERHEAD_S + b["budget_s"] + GRACE_S)
        b["arithmetic"] = f"--budget {args.budget} given; timeout_s = min({COMMAND_MAX_S}, {RUN_OVERHEAD_S} + B + {GRACE_S})"
    seq = calls_json(calls, sizes, wheels, args.profile, b, args.commit, args.dirty)
    doc = {"profile": args.profile, "repo_bytes": repo, "capacity_bytes": capacity, "tree_limit": args.tree_limit,
           "wheels": [Path(w).name for w in wheels], "wheel_bytes": wheel_bytes, "archives": sizes,
           "pieces": [{"id": i, "title": t, "estimate_s": round(s, 1)} for i, t, s in pieces_run],
           "budget": b, "calls": seq, "sha256": file_sums}
    (out / "calls.json").write_text(json.dumps(doc, indent=1) + "\n")

    mib = lambda n: f"{n / MIB:.1f} MiB"  # noqa: E731
    print(f"tree sent by every call: {mib(repo)}; room a call: 64 MiB - {mib(repo)} - {mib(args.margin)} margin = "
          f"{mib(capacity)}")
    if pieces_run:
        print(f"pieces `piece --profile {args.profile} --next --budget {b['budget_s']}s` may run (estimates, "
              f"budgets {b['budget_s'] - WINDOW_S}-{b['budget_s']} s): "
              + "; ".join(f"{i} ({s / 60:.1f} min)" for i, _, s in pieces_run))
    if wheels:
        print(f"wheels ({mib(wheel_bytes)}, their dependencies all on the machine): "
              + ", ".join(Path(w).name for w in wheels))
    print("archives: " + ", ".join(f"{n} {mib(s)}" for n, s in sizes.items()))
    for c in seq:
        sent = repo + c["data_bytes"] + (wheel_bytes if c["call"] == len(seq) else 0)
        print(f"  call-{c['call']}: " + ", ".join(f"{f} {mib(ln)}" for f, _, _, _, ln in calls[c["call"] - 1])
              + (f", .whl {mib(wheel_bytes)}" if c["call"] == len(seq) and wheels else "")
              + f"  -> tree {mib(sent)} of 64 MiB")
    print(f"budget: {b['arithmetic']}")
    print("\nthe device calls, back to back (the machine stays warm 30 s after a call):")
    for c in seq:
        print(f"\n{c['call']}. command: {c['command']}\n   carry: {json.dumps(c['carry'])}\n   timeout_s: {c['timeout_s']}")
    print(f"\n(also in {out / 'calls.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
