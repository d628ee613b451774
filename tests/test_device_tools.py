"""tools/device/: the GPU session's data calls, the run there, and the machine's packages, on the CPU.

No network: the wheels are not downloaded here (prepare.sh does that), the round trip uses
generated files, the run uses the archives in $RETHINK_DATA (skipped without them)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools" / "device"
ON_DEVICE = TOOLS / "on_device.sh"
sys.path.insert(0, str(TOOLS))
import check_imports  # noqa: E402
import plan_calls  # noqa: E402

# what the device lacks and must not be imported by the piece runner's planning
JUPYTER_ETC = {"jupytext", "papermill", "nbformat", "IPython", "jupyter_client", "ipykernel"}
CARRIED = {"pycocotools", "faster_coco_eval", "imagecorruptions"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RETHINK_RESULTS", "OUT")}
    env.update({"DEVICE_PARTS": str(tmp / "parts"), "DEVICE_DATA": str(tmp / "data"), "DEVICE_SITE": str(tmp / "site"),
                "DEVICE_CACHE": str(tmp / "cache"), "PYTHON": sys.executable, **extra})
    return env


def _sh(args, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ON_DEVICE), *args], cwd=cwd, env=env, capture_output=True, text=True)


def _copy_tree(dest: Path) -> Path:
    """What the device tool sends: tracked and untracked-not-ignored files (no .git)."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for n in filter(None, names):
        src = REPO / n
        if src.is_file():
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / n)
    return dest


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A data folder: a 'big' archive that must be split, two small ones, SHA256SUMS."""
    src = tmp_path / "src"
    src.mkdir()
    rng = __import__("random").Random(0)
    for name, size in (("big.tar.gz", 250_000), ("small.tar.gz", 40_000), ("other.tar.gz", 30_000)):
        (src / name).write_bytes(bytes(rng.getrandbits(8) for _ in range(size)))
    (src / "SHA256SUMS").write_text("".join(f"{_sha(src / n)}  {n}\n" for n in ("big.tar.gz", "small.tar.gz",
                                                                                 "other.tar.gz")))
    return src


def _prepare(src: Path, out: Path, limit: int = 110_000) -> dict:
    args = ["--src", str(src), "--out", str(out), "--archives", "big.tar.gz,small.tar.gz,other.tar.gz",
            "--repo-bytes", "0", "--margin", "0", "--tree-limit", str(limit), "--commit", "a" * 40,
            "--wheels", str(src / "no-wheels")]
    assert plan_calls.main(args) == 0
    return json.loads((out / "calls.json").read_text())


def test_pack_fills_calls_under_the_limit_and_splits_only_the_largest():
    sizes = {"tiny.tar.gz": 124_374_079, "cifar.tar.gz": 19_417_315}
    cap = 64 * plan_calls.MIB - 8 * plan_calls.MIB
    calls = plan_calls.pack(sizes, cap, last_reserve=3 * plan_calls.MIB)
    assert [sum(c[-1] for c in call) for call in calls][:-1] <= [cap] * (len(calls) - 1)
    assert sum(c[-1] for c in calls[-1]) <= cap - 3 * plan_calls.MIB
    assert len(calls) == 3
    assert [f for call in calls for f, a, *_ in call if a == "cifar.tar.gz"] == ["cifar.tar.gz"]   # whole
    parts = [(i, o, ln) for call in calls for _, a, i, o, ln in call if a == "tiny.tar.gz"]
    assert [i for i, _, _ in parts] == list(range(len(parts)))
    assert sum(ln for *_, ln in parts) == sizes["tiny.tar.gz"]
    assert all(parts[k][1] + parts[k][2] == parts[k + 1][1] for k in range(len(parts) - 1))


def test_budget_arithmetic_fits_the_session_and_the_command_limit():
    for data_calls in range(0, 4):
        b = plan_calls.budget(data_calls)
        assert b["budget_s"] > 0 and b["budget_s"] % 30 == 0
        assert b["timeout_s"] <= plan_calls.COMMAND_MAX_S
        worst = plan_calls.START_S + data_calls * plan_calls.DATA_CALL_S + b["timeout_s"] + plan_calls.CLOSE_S
        assert worst + plan_calls.SPARE_S <= plan_calls.DEVICE_S
    assert plan_calls.budget(2)["budget_s"] == 480


def test_split_stash_assemble_round_trip(source: Path, tmp_path: Path):
    out = tmp_path / "repo" / ".devdata"
    doc = _prepare(source, out)
    assert len(doc["calls"]) >= 3
    for c in doc["calls"]:
        assert sum((out / f"call-{c['call']}" / f).stat().st_size for f in c["files"]) <= 110_000
    again = _prepare(source, out)   # idempotent: the same layout and files
    assert again["sha256"] == doc["sha256"]
    repo, env = tmp_path / "repo", _env(tmp_path)
    for c in doc["calls"]:
        r = _sh(["stash", f".devdata/call-{c['call']}"], repo, env)
        assert r.returncode == 0, r.stderr
        assert f"stash: call {c['call']} of {len(doc['calls'])} verified" in r.stdout
    r = _sh(["assemble"], repo, env)
    assert r.returncode == 0, r.stderr
    for n in ("big.tar.gz", "small.tar.gz", "other.tar.gz"):
        assert _sha(tmp_path / "data" / n) == _sha(source / n)
    assert _sh(["assemble"], repo, env).returncode == 0   # again: the archives are there


def test_stash_refuses_a_corrupt_part_and_a_fresh_machine(source: Path, tmp_path: Path):
    out = tmp_path / "repo" / ".devdata"
    doc = _prepare(source, out)
    repo = tmp_path / "repo"
    first = out / "call-1" / doc["calls"][0]["files"][0]
    data = bytearray(first.read_bytes())
    data[10] ^= 1
    first.write_bytes(bytes(data))
    r = _sh(["stash", ".devdata/call-1"], repo, _env(tmp_path))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: tools/device/on_device.sh stash:") and "SHA-256" in r.stderr
    r = _sh(["stash", ".devdata/call-2"], repo, _env(tmp_path))   # call 1 never arrived
    assert r.returncode == 1 and "fresh machine" in r.stderr and "start again from call 1" in r.stderr
    r = _sh(["assemble"], repo, _env(tmp_path, DEVICE_PARTS=str(tmp_path / "none")))
    assert r.returncode == 1 and "run the stash calls first" in r.stderr


def test_one_line_errors(tmp_path: Path):
    env = _env(tmp_path)
    for args, words in ((["nope"], "unknown sub-command"), (["stash", "missing"], "carry"),
                        (["install"], "no wheels"), (["run", "--commit", "abc1234"], "--budget is needed"),
                        (["run", "--budget", "1m", "--commit", "abc1234"], "OUT is not set")):
        r = _sh(args, tmp_path, env)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and words in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("error: tools/device/on_device.sh")


def test_wheel_dependencies_are_checked_against_the_machine(tmp_path: Path):
    import zipfile

    wheels = tmp_path / "whl"
    wheels.mkdir()
    for name, deps in (("good-1.0-py3-none-any.whl", ["numpy", "opencv-python (>=3)", "pytest; extra == 'tests'"]),
                       ("bad-1.0-py3-none-any.whl", ["numpy", "jupytext>=1"])):
        with zipfile.ZipFile(wheels / name, "w") as z:
            z.writestr(f"{name.split('-')[0]}-1.0.dist-info/METADATA",
                       "Name: x\n" + "".join(f"Requires-Dist: {d}\n" for d in deps))
    machine = plan_calls.machine_packages(TOOLS / "machine-packages.txt")
    assert {"torch", "numpy", "scikit-image", "opencv-python-headless"} <= machine
    assert plan_calls.wheel_needs(sorted(map(str, wheels.glob("*.whl"))), machine) == \
        ["bad-1.0-py3-none-any.whl: needs jupytext"]


def test_the_planners_imports_need_only_the_machines_packages():
    """``piece --profile smoke --dry-run`` under the device's packages alone: nothing of Jupyter
    (profiles fall back to reading the MyST parameters cell), no COCO or corruption package."""
    doc = check_imports.run(["-m", "rethink.book", "piece", "--profile", "smoke", "--next", "--budget", "5m",
                             "--dry-run"], carried=True)
    assert doc["rc"] == 0, doc["stderr"][-2000:]
    assert "running" in doc["stdout"]
    assert doc["outside"] == []
    assert not (set(doc["imported"]) & (JUPYTER_ETC | CARRIED)), doc["imported"]
    assert "jupytext" in doc["missing"]   # tried, and fell back


@pytest.mark.skipif(not (Path(os.environ.get("RETHINK_DATA", "")) / "cifar10-jpg.tar.gz").is_file(),
                    reason="needs the archives in $RETHINK_DATA")
def test_run_at_smoke_writes_a_bundle_that_merge_accepts(tmp_path: Path):
    """``on_device.sh run`` on a copy of the tree (no .git), as there, with the machine's packages
    alone (python -S and a folder of the allowed distributions): one small smoke piece."""
    copy = _copy_tree(tmp_path / "copy")
    site = tmp_path / "pkgs"
    check_imports.build_site(site, carried=True)
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    cache = os.environ.get("RETHINK_CACHE") or str(tmp_path / "cache")
    env = _env(tmp_path, OUT=str(out), PYTHON=str(wrapper), PYTHONPATH=str(site), DEVICE_CACHE=cache)
    # at smoke, in chapter 3 only piece 2 (3 s estimated) fits in 11 s; piece 1 takes 12
    r = _sh(["run", "--profile", "smoke", "--budget", "11s", "--commit", "b" * 40, "--data",
             os.environ["RETHINK_DATA"], "--", "--chapters", "03_noisy_student"], copy, env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "run: piece exited 0" in r.stdout
    bundle = out / "bundle.tar.gz"
    assert (out / "piece.log").read_text().strip()
    with tarfile.open(bundle) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    assert manifest["commit"] == "b" * 40 and manifest["complete"] and manifest["profile"] == "smoke"
    assert [p["id"] for p in manifest["pieces"]] == [2]
    merged = subprocess.run([sys.executable, "-m", "rethink.book", "merge", "--dry-run", str(bundle)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "lib"),
                                 "RETHINK_RESULTS": str(tmp_path / "store")},
                            capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    assert "would add 2 file(s)" in merged.stdout and "0 conflict(s)" in merged.stdout
