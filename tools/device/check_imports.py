"""Run a Python command as if on the device machine's packages alone (tools/device/README.md).

    python tools/device/check_imports.py [--carried] -- -m rethink.book piece --profile smoke --next --budget 5m --dry-run
    python tools/device/check_imports.py site DIR [--carried]     # only build the package folder

This interpreter's installed distributions that tools/device/machine-packages.txt lists (and,
with ``--carried``, the wheels prepare.sh carries) are linked into a temporary folder; the
command runs under ``python -S`` (no site-packages) with that folder and lib/ on the path, so
an import of anything else fails as it would there. The report (JSON, last line of stdout):
``rc``, ``imported`` (top-level non-stdlib modules the command imported), ``missing`` (those it
tried and did not find: fine where it falls back), ``outside`` (imported from anywhere but
the folder, lib/ or the stdlib: must be empty).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CARRIED = ("pycocotools", "faster-coco-eval", "imagecorruptions")   # prepare.sh's wheels
ALIASES = {"opencv-python": "opencv-python-headless"}               # same cv2 module

sys.path.insert(0, str(HERE))
from plan_calls import machine_packages, norm  # noqa: E402


def build_site(dest: Path, carried: bool) -> list[str]:
    """Link the allowed distributions' files into ``dest``; returns their names."""
    allowed_names = machine_packages(HERE / "machine-packages.txt") | ({norm(c) for c in CARRIED} if carried else set())
    owners: dict[str, set[str]] = {}
    files: dict[str, list] = {}
    for dist in md.distributions():
        name = norm(dist.metadata["Name"] or "")
        if name in files:   # the first on the path wins, as for imports
            continue
        files[name] = [f for f in (dist.files or []) if f.parts and f.parts[0] != ".."]
        for f in files[name]:
            owners.setdefault(f.parts[0], set()).add(name)
        files[name] = [(f, dist) for f in files[name]]
    ok = {n for n in files if n in allowed_names or ALIASES.get(n) in allowed_names}
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(ok):
        for f, dist in files[name]:
            top = f.parts[0]
            if top.endswith(".pth"):
                continue
            whole = owners[top] <= ok          # only allowed distributions own it: link it whole
            rel = Path(top) if whole else Path(*f.parts)
            target = dest / rel
            if target.exists() or target.is_symlink():
                continue
            src = Path(dist.locate_file(rel))
            if not src.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(src.resolve())
    return sorted(ok)


CHILD = r"""
import atexit, importlib.abc, json, os, sys, sysconfig, runpy
site_dir, lib_dir, report = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
missing = set()
class Last(importlib.abc.MetaPathFinder):       # reached only when no finder found the module
    def find_spec(self, name, path, target=None):
        if "." not in name and name not in sys.stdlib_module_names:
            missing.add(name)
        return None
sys.meta_path.append(Last())
std = [os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")]
def done():
    imported, outside = set(), set()
    for name, mod in list(sys.modules.items()):
        top = name.split(".")[0]
        if "." in name or top in sys.stdlib_module_names or top in sys.builtin_module_names or top.startswith("__"):
            continue
        f = getattr(mod, "__file__", None) or ""
        spec = getattr(mod, "__spec__", None)
        locs = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
        where = [p for p in [f] + locs if p]
        if not where:
            continue    # built into an extension (cython_runtime and the like)
        imported.add(top)
        for p in where:
            if not (p.startswith(site_dir) or os.path.realpath(p).startswith(lib_dir)
                    or any(os.path.realpath(p).startswith(s) for s in std)):
                outside.add(f"{top} ({p})")
    with open(report, "w") as fh:
        json.dump({"imported": sorted(imported), "missing": sorted(missing - imported), "outside": sorted(outside)}, fh)
atexit.register(done)
if args[:1] == ["-m"]:
    sys.argv = [args[1]] + args[2:]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
"""


def run(argv: list[str], carried: bool, env: dict | None = None, cwd: Path = REPO) -> dict:
    with tempfile.TemporaryDirectory(prefix="device-site-") as tmp:
        site = Path(tmp) / "site"
        build_site(site, carried)
        report = Path(tmp) / "report.json"
        lib = str((REPO / "lib").resolve())
        e = dict(os.environ if env is None else env)
        e["PYTHONPATH"] = f"{lib}{os.pathsep}{site}"
        e.pop("PYTHONHOME", None)
        p = subprocess.run([sys.executable, "-S", "-c", CHILD, str(site), lib, str(report), *argv], cwd=cwd, env=e,
                           capture_output=True, text=True)
        doc = json.loads(report.read_text()) if report.exists() else {"imported": [], "missing": [], "outside": []}
        return {"rc": p.returncode, **doc, "stdout": p.stdout, "stderr": p.stderr}


def main(argv: list[str]) -> int:
    if argv[:1] == ["site"]:
        names = build_site(Path(argv[1]), "--carried" in argv)
        print(f"{argv[1]}: {len(names)} distributions: {', '.join(names)}")
        return 0
    carried = "--carried" in argv[: argv.index("--")] if "--" in argv else False
    if "--" not in argv:
        sys.exit("error: tools/device/check_imports.py: usage: check_imports.py [--carried] -- -m MODULE ARGS...")
    doc = run(argv[argv.index("--") + 1:], carried)
    sys.stdout.write(doc.pop("stdout"))
    sys.stderr.write(doc.pop("stderr"))
    print(json.dumps(doc))
    return 0 if doc["rc"] == 0 and not doc["outside"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
