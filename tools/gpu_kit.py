"""The offline GPU check kit (docs/gpu_check.md).

  python -m tools.gpu_kit                  # build .gpu-kit/: host tree, wheelhouse, manifest (make gpu-kit)
  python -m tools.gpu_kit base-view DIR    # links to the GPU image's packages only, taken from this venv (CI rehearsal)
  python -m tools.gpu_kit check ...        # the checks and the report; run by tools/gpu_check.sh inside the kit's venv

A lent GPU machine has no network. Its image holds torch, torchvision, numpy, scipy, transformers,
pytest and the rest of DEVICE_BASE, but not ComfyUI nor the few packages ComfyUI imports beyond
those. The kit carries exactly that difference, found by an import test rather than listed by hand:

  host/ComfyUI/   the top-level modules and packages of the set-up host (.host, ComfyUI 0.3.75) that
                  `import comfy.samplers, comfy.sd, nodes, comfy_extras.nodes_custom_sampler` and the
                  pack load: Python files and small data files; no models, web assets or tokenizer data
  wheels/         the distributions that import test asked for beyond DEVICE_BASE (`pip download
                  --no-deps`, for CPython 3.12 on manylinux x86_64; also for this interpreter where
                  that wheel would not install here, so CI can rehearse the offline install)
  requirements.txt, manifest.json (files, sizes, versions, sha256, commit), README.txt

The import test runs in a throw-away venv whose only packages are links to DEVICE_BASE (and their
requirements) from the venv that builds the kit. A first run puts a stand-in in place of each package
that is missing, so one run names them all (each, with its own requirements, goes into the
wheelhouse); a clean run against the kit's own host copy then has to load the same host modules.
Both also import rhymeflow_core and tools/bench.py with comfy_api blocked: the benchmark needs only
the host's model code.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
KIT_DIR = PACK_DIR / ".gpu-kit"
MAX_KIT_BYTES = 60 * 10**6
TREE_LIMIT_BYTES = 64 * 2**20   # what may travel to a lent machine: working tree + carried kit
TARGET_PYTHON = "3.12"
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                    "manylinux1_x86_64")
TARGET_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
                  "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython"}
# What the GPU machine's image already has (device KINDS.md, "Python packages already there"): never carried.
DEVICE_BASE = ("torch", "torchvision", "einops", "safetensors", "numpy", "scipy", "psutil", "tqdm", "pyyaml", "pillow",
               "transformers", "pytest")
# Module names to import in the base interpreter before anything runs (gpu_check.sh's preflight).
DEVICE_BASE_MODULES = ("torch", "torchvision", "einops", "safetensors", "numpy", "scipy", "psutil", "tqdm", "yaml", "PIL",
                       "transformers", "pytest")
# What the checks import: the host's sampling path, the nodes the benchmark uses, and the whole pack core.
IMPORTS = ("comfy.samplers", "comfy.sd", "nodes", "comfy_extras.nodes_custom_sampler", "comfy_extras.nodes_easycache",
           "comfy.extra_samplers.uni_pc", "comfy.ldm.wan.model", "comfy.ldm.hunyuan_video.model", "comfy.ldm.lightricks.model",
           "tools.gpu_profile")
SMALL_DATA_BYTES = 64 * 1024
SKIP_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".pyc", ".pyi", ".md")
HOST_EXTRAS = ("LICENSE", "requirements.txt", "comfyui_version.py", "pyproject.toml")


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[gpu-kit {time.perf_counter() - _T0:5.1f}s] {msg}", flush=True)


def host_root() -> Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return Path(env).resolve()
    marker = PACK_DIR / ".host" / "comfyui_path"
    if marker.exists():
        return Path(marker.read_text().strip())
    raise SystemExit("gpu-kit: no ComfyUI host: run `make setup` (or set COMFYUI_PATH)")


def git_commit(short: bool = False) -> tuple[str, bool]:
    """(commit, working tree dirty) of the pack."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=PACK_DIR, capture_output=True, text=True).stdout.strip()
        except OSError:   # no git (a copied tree on a lent machine)
            return ""
    commit = git("rev-parse", "--short" if short else "HEAD") or "unknown"
    return commit, bool(git("status", "--porcelain", "--untracked-files=no"))


# ---- distributions -------------------------------------------------------------------------------

def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(name: str):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def closure(names, markers: dict | None = None, stop=frozenset()) -> dict[str, md.Distribution]:
    """Installed distributions `names` and, transitively, their requirements (markers evaluated for
    `markers` over this interpreter's values; extras followed), skipping any in `stop`."""
    from packaging.requirements import Requirement
    seen: dict[str, md.Distribution] = {}
    queue = [(canonical(n), frozenset()) for n in names]
    done = set()
    while queue:
        name, extras = queue.pop()
        if (name, extras) in done or name in stop:
            continue
        done.add((name, extras))
        dist = _distribution(name)
        if dist is None:
            continue
        seen[name] = dist
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({**(markers or {}), "extra": e}) for e in ("", *extras)):
                queue.append((canonical(req.name), frozenset(req.extras)))
    return seen


def top_level_entries(dist: md.Distribution) -> set[str]:
    """First path components (relative to site-packages) of the files a distribution installed."""
    entries = set()
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if not parts or parts[0] == ".." or parts[0] == "__pycache__" or str(f).endswith(".pth"):
            continue
        entries.add(parts[0])
    return entries


def base_view(target: Path, names=DEVICE_BASE) -> dict:
    """A folder of links to the installed DEVICE_BASE distributions (and what they require), nothing else."""
    target.mkdir(parents=True, exist_ok=True)
    dists = closure(names)
    missing = [n for n in names if canonical(n) not in dists]
    if missing:
        raise SystemExit(f"gpu-kit: this venv lacks {missing}, which the GPU image has; install them first (make setup)")
    for dist in dists.values():
        site = Path(str(dist.locate_file("")))
        for entry in top_level_entries(dist):
            src, dst = site / entry, target / entry
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
    return {name: d.version for name, d in sorted(dists.items())}


# ---- import test ---------------------------------------------------------------------------------

PROBE = r"""
import importlib, json, os, pkgutil, sys, types
host, pack, imports, discover = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4] == "1"
sys.path[:0] = [host, pack]        # the host first: its `nodes` module, not the pack's nodes/ folder
missing = set()


class Stub(types.ModuleType):
    # Discovery only: stands in for a missing package so one run finds every missing one.
    __path__ = []

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = type(attr, (), {})
        setattr(self, attr, value)
        return value


def ours(name):
    top = name.split(".")[0]
    return any(os.path.exists(os.path.join(root, top)) or os.path.exists(os.path.join(root, top + ".py")) for root in (host, pack))


def stub(name):
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = Stub(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])


class NoComfyApi:
    # The pack's core and the benchmark must import with only the host's model code (no V3 node API).
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "comfy_api":
            raise ImportError(f"{name} imported while importing rhymeflow_core / tools.bench: rhymeflow_core must stay "
                              "importable without comfy_api (compat.v3_api imports it lazily)")


def everything():
    import comfy.cli_args
    import utils.extra_config      # as ComfyUI's main.py, before `nodes`
    comfy.cli_args.args.cpu = True
    guard = NoComfyApi()
    sys.meta_path.insert(0, guard)
    try:
        import rhymeflow_core
        for m in pkgutil.walk_packages(rhymeflow_core.__path__, "rhymeflow_core."):
            importlib.import_module(m.name)
        importlib.import_module("tools.bench")
    finally:
        sys.meta_path.remove(guard)
    for name in imports:
        importlib.import_module(name)


try:
    for _ in range(100):
        try:
            everything()
            break
        except ModuleNotFoundError as e:
            if not discover or not e.name or ours(e.name):
                raise
            missing.add(e.name)
            stub(e.name)
except Exception as e:
    if missing or isinstance(e, ModuleNotFoundError):
        print(json.dumps({"missing": sorted(missing | ({e.name} if isinstance(e, ModuleNotFoundError) else set())),
                          "error": repr(e)}))
        sys.exit(3)
    raise
files = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None) or ""
    if f.startswith(host + os.sep):
        files.add(os.path.relpath(f, host))
print(json.dumps({"host_files": sorted(files), "missing": sorted(missing)}))
sys.exit(3 if missing else 0)
"""


def make_probe_venv(where: Path, site_dirs: list[Path]) -> Path:
    """A venv with no packages of its own and no system site-packages: only `site_dirs`, through a .pth."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    py = where / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_gpu_kit_base.pth").write_text("".join(f"{d}\n" for d in site_dirs))
    return py


def run_probe(py: Path, host: Path, discover: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COMFYUI"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run([str(py), "-B", "-c", PROBE, str(host), str(PACK_DIR), ",".join(IMPORTS), "1" if discover else "0"],
                          capture_output=True, text=True,
                          env=env, cwd=tempfile.gettempdir())
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        raise SystemExit(f"gpu-kit: the import test failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    if proc.returncode not in (0, 3):
        raise SystemExit(f"gpu-kit: the import test failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return result


class Extras:
    """The distributions found missing so far, linked into a folder the probe venvs see."""

    def __init__(self, folder: Path, base: set[str]):
        self.folder, self.base = folder, base
        self.folder.mkdir(parents=True)
        self.providers = md.packages_distributions()
        self.dists: dict[str, md.Distribution] = {}

    def add(self, modules, error: str = "") -> int:
        added = 0
        for module in sorted({m.split(".")[0] for m in modules}):
            names = self.providers.get(module)
            if not names:
                raise SystemExit(f"gpu-kit: the host imports {module!r}, which no distribution in this venv provides "
                                 f"({error}); install the host's requirements (make setup)")
            new = closure(names, TARGET_MARKERS, stop=frozenset(self.base) | frozenset(self.dists))
            for name, dist in new.items():
                log(f"import test: {module!r} is missing -> wheel {dist.metadata['Name']}=={dist.version}")
                self.dists[name] = dist
                added += 1
                site = Path(str(dist.locate_file("")))
                for entry in top_level_entries(dist):
                    if not (self.folder / entry).exists():
                        (self.folder / entry).symlink_to(site / entry)
        return added


def find_extras(host: Path, work: Path) -> tuple[Extras, list[str], dict, Path]:
    """Distributions the host and the pack import beyond DEVICE_BASE, and the host files they load.

    One run with stand-ins for missing packages finds them all; the clean run against the kit's copy
    (build) confirms, and adds any the stand-ins hid."""
    view = work / "base"
    base_versions = base_view(view)
    extras = Extras(work / "extras", set(base_versions))
    py = make_probe_venv(work / "venv", [extras.folder, view])
    for _ in range(10):
        result = run_probe(py, host, discover=True)
        added = extras.add(result.get("missing", []), result.get("error", ""))
        if "host_files" in result:
            return extras, result["host_files"], base_versions, py
        if not added:
            raise SystemExit(f"gpu-kit: the import test failed: {result.get('error')}")
    raise SystemExit("gpu-kit: the import test did not converge")


# ---- host tree -----------------------------------------------------------------------------------

def wanted_host_file(rel: Path, size: int) -> bool:
    """Python files; small data files (model configs), but no tokenizer vocabularies, images or docs."""
    if "__pycache__" in rel.parts:
        return False
    if rel.suffix == ".py":
        return True
    return not (rel.suffix in SKIP_SUFFIXES or size > SMALL_DATA_BYTES or any("tokenizer" in p for p in rel.parts[:-1]))


def copy_host(host: Path, host_files: list[str], dest: Path) -> list[str]:
    """Copy every top-level module and package the import test loaded (whole packages: their lazy imports too)."""
    tops = sorted({Path(f).parts[0] for f in host_files})
    copied = []
    for top in tops + [e for e in HOST_EXTRAS if e not in tops]:
        src = host / top
        if src.is_file():
            shutil.copy2(src, dest / top)
            copied.append(top)
            continue
        if not src.is_dir():
            continue
        for path in sorted(src.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(host)
            if wanted_host_file(rel, path.stat().st_size):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
                copied.append(str(rel))
    (dest / "custom_nodes").mkdir(exist_ok=True)
    return tops


def host_version(host: Path) -> str:
    text = (host / "comfyui_version.py").read_text() if (host / "comfyui_version.py").exists() else ""
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return found.group(1) if found else "unknown"


# ---- wheelhouse ----------------------------------------------------------------------------------

def download(requirement: str, dest: Path, target: bool) -> Path:
    """A wheel of `requirement` (name==version) for the GPU machine (`target`) or for this interpreter."""
    fits = installs_on_target if target else installs_here

    def present():
        return next((p for p in sorted(dest.glob("*.whl")) if _wheel_matches(p, requirement) and fits(p)), None)

    if present() is None:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", "--only-binary=:all:",
               "-d", str(dest)]
        if target:
            cmd += ["--python-version", TARGET_PYTHON, "--implementation", "cp"]
            for p in TARGET_PLATFORMS:
                cmd += ["--platform", p]
        proc = subprocess.run(cmd + [requirement], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"gpu-kit: pip download {requirement} failed:\n{proc.stderr[-2000:]}")
    found = present()
    if found is None:
        raise SystemExit(f"gpu-kit: pip download {requirement} gave no wheel for {'CPython ' + TARGET_PYTHON if target else 'this python'}")
    return found


def _wheel_matches(path: Path, requirement: str) -> bool:
    from packaging.utils import parse_wheel_filename
    name, version = requirement.split("==")
    try:
        wname, wversion, _, _ = parse_wheel_filename(path.name)
    except Exception:
        return False
    return canonical(wname) == canonical(name) and str(wversion) == version


def installs_here(path: Path) -> bool:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
    _, _, _, tags = parse_wheel_filename(path.name)
    return bool(set(tags) & set(sys_tags()))


def installs_on_target(path: Path) -> bool:
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import parse_wheel_filename
    _, _, _, tags = parse_wheel_filename(path.name)
    target = set()
    for plat in TARGET_PLATFORMS:
        target |= set(cpython_tags((3, 12), platforms=[plat])) | set(compatible_tags((3, 12), "cp312", platforms=[plat]))
    return bool(set(tags) & target)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- build ---------------------------------------------------------------------------------------

def build(out: Path, max_bytes: int) -> dict:
    started = time.perf_counter()
    host = host_root()
    if not (host / "comfy" / "model_patcher.py").exists():
        raise SystemExit(f"gpu-kit: {host} is not a ComfyUI tree")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-kit-"))
    try:
        log(f"import test against {host} in a venv with only the GPU image's packages ({', '.join(DEVICE_BASE)})")
        extras, host_files, base_versions, py = find_extras(host, tmp / "probe")
        staging = out.with_name(out.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "host" / "ComfyUI").mkdir(parents=True)
        (staging / "wheels").mkdir()
        tops = copy_host(host, host_files, staging / "host" / "ComfyUI")
        log(f"host: {len(host_files)} modules loaded, from {', '.join(tops)}")
        check_host_copy(py, staging / "host" / "ComfyUI", extras, host_files)
        wheels = fetch_wheels(extras, staging / "wheels")
        (staging / "requirements.txt").write_text("".join(f"{w['name']}=={w['version']}\n" for w in wheels))
        for made in ("input", "output", "temp"):   # folders ComfyUI's folder_paths makes on import
            shutil.rmtree(staging / "host" / "ComfyUI" / made, ignore_errors=True)
        manifest = write_manifest(staging, host, tops, wheels, base_versions)
        (staging / "README.txt").write_text(README.format(**manifest["summary"]))
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        if size > max_bytes:
            raise SystemExit(f"gpu-kit: the kit is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tree = tracked_tree_bytes()
    log(f"built {out} in {time.perf_counter() - started:.0f} s: {size / 1e6:.1f} MB "
        f"(host {manifest['host']['bytes'] / 1e6:.1f} MB in {manifest['host']['files']} files, "
        f"wheels {sum(w['bytes'] for w in manifest['wheels']) / 1e6:.1f} MB: "
        f"{', '.join(w['name'] + ' ' + w['version'] for w in manifest['wheels'])})")
    if tree is not None:
        total = tree + size
        log(f"tracked tree {tree / 2**20:.1f} MiB + kit {size / 2**20:.1f} MiB = {total / 2**20:.1f} MiB to carry "
            f"(limit {TREE_LIMIT_BYTES / 2**20:.0f} MiB){'  -- OVER' if total > TREE_LIMIT_BYTES else ''}")
    return manifest


def check_host_copy(py, host_copy: Path, extras, host_files) -> None:
    """The clean import test (no stand-ins) against the kit's own host copy: the same modules must load."""
    for _ in range(5):
        check = run_probe(py, host_copy)
        if "host_files" in check or not extras.add(check.get("missing", []), check.get("error", "")):
            break
    if "host_files" not in check:
        raise SystemExit(f"gpu-kit: the kit's host copy fails the import test: {check}")
    lost = set(host_files) - set(check["host_files"])
    if lost:
        raise SystemExit(f"gpu-kit: the kit's host copy lacks {sorted(lost)[:10]}")


def fetch_wheels(extras, folder: Path) -> list[dict]:
    """A wheel of each extra package for the GPU machine's Python (and one for this interpreter, which CI installs)."""
    wheels = []
    for _, dist in sorted(extras.dists.items()):
        req = f"{dist.metadata['Name']}=={dist.version}"
        path = download(req, folder, target=True)
        entry = {"name": dist.metadata["Name"], "version": dist.version, "files": [path.name]}
        if not installs_here(path):   # CI rehearses the install on this interpreter
            entry["files"].append(download(req, folder, target=False).name)
        wheels.append(entry)
        log(f"wheel {req}: {', '.join(entry['files'])}")
    for entry in wheels:
        entry["target_ok"] = any(installs_on_target(folder / f) for f in entry["files"])
        if not entry["target_ok"]:
            raise SystemExit(f"gpu-kit: no wheel of {entry['name']} {entry['version']} for CPython {TARGET_PYTHON} x86_64")
    return wheels


def tracked_tree_bytes() -> int | None:
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=PACK_DIR, capture_output=True)
    if proc.returncode:
        return None
    return sum((PACK_DIR / f).stat().st_size for f in proc.stdout.decode().split("\0") if f and (PACK_DIR / f).is_file())


def write_manifest(kit: Path, host: Path, tops: list[str], wheels: list[dict], base_versions: dict) -> dict:
    commit, dirty = git_commit()
    files = [{"path": str(p.relative_to(kit)), "bytes": p.stat().st_size}
             for p in sorted(kit.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    host_files = [f for f in files if f["path"].startswith("host/")]
    for w in wheels:
        w["bytes"] = sum((kit / "wheels" / f).stat().st_size for f in w["files"])
        w["sha256"] = {f: sha256(kit / "wheels" / f) for f in w["files"]}
    manifest = {
        "kit": "ComfyUI-RhymeFlow offline GPU check kit (docs/gpu_check.md)",
        "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit, "dirty": dirty,
        "builder": {"python": sys.version.split()[0], "platform": sys.platform},
        "target": {"python": TARGET_PYTHON, "platforms": list(TARGET_PLATFORMS)},
        "expects_on_machine": {"distributions": list(DEVICE_BASE), "modules": list(DEVICE_BASE_MODULES),
                               "versions_where_built": base_versions},
        "host": {"comfyui_version": host_version(host), "source": str(host), "top_level": tops,
                 "files": len(host_files), "bytes": sum(f["bytes"] for f in host_files)},
        "imports": list(IMPORTS),
        "wheels": wheels,
        "files": files,
    }
    manifest["total_bytes"] = sum(f["bytes"] for f in files)
    manifest["summary"] = {"commit": commit, "comfyui": manifest["host"]["comfyui_version"],
                           "wheels": ", ".join(f"{w['name']}=={w['version']}" for w in wheels),
                           "base": ", ".join(DEVICE_BASE)}
    (kit / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["total_bytes"] += (kit / "manifest.json").stat().st_size
    return manifest


README = """ComfyUI-RhymeFlow offline GPU check kit (built from commit {commit}; never committed).

host/ComfyUI   ComfyUI {comfyui}, the parts the checks import (no models, no web assets)
wheels/        {wheels} (pip install --no-index --no-deps)
manifest.json  every file with its size; wheel versions and sha256; the commit

The machine must already have: {base}.
Run from the repository root, with this folder at .gpu-kit:   bash tools/gpu_check.sh
See docs/gpu_check.md.
"""


# ---- the checks (run by tools/gpu_check.sh inside the kit's venv) ---------------------------------

# Seconds per section on a GPU run (a 480 s budget in all); --cpu-smoke has its own.
GPU_CAPS = {"imports": 60, "tests": 150, "profile": 90}
SMOKE_CAPS = {"imports": 120, "tests": 600, "profile": 180, "bench": 300}
SMOKE_BENCH = ["--model", "tiny", "--size", "32x32", "--frames", "17", "--quick", "--quick-steps", "5", "--device", "cpu",
               "--rows", "dense,release,release-cpu"]
SMOKE_PROFILE = ["--model", "tiny", "--size", "32x32", "--frames", "17", "--device", "cpu"]
GPU_PROFILE = ["--model", "1.3b", "--size", "480p", "--frames", "81", "--device", "cuda"]
RESERVE_S = 15   # left for the report at the end of the budget


class Checks:
    def __init__(self, args):
        self.args = args
        self.smoke = args.mode == "cpu-smoke"
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.deadline = time.monotonic() + args.budget
        self.sections: list[dict] = []
        self.log_file = open(self.out / "log.txt", "a")
        self.host = Path(args.kit) / "host" / "ComfyUI"
        self.env = dict(os.environ, COMFYUI_PATH=str(self.host), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
                        RHYMEFLOW_TEST_DEVICE="cpu-smoke" if self.smoke else "cuda")

    def say(self, msg: str) -> None:
        print(msg, flush=True)
        self.log_file.write(msg + "\n")
        self.log_file.flush()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, cmd: list[str], cap: float, env: dict | None = None) -> dict:
        """Run one command of a section under min(cap, budget left); its output goes to the log."""
        limit = max(1.0, min(cap, self.remaining() - RESERVE_S))
        shown = " ".join("<import test>" if c == PROBE else c for c in cmd)
        self.say(f"[gpu-check] {name}: {shown}  (limit {limit:.0f} s)")
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=PACK_DIR, env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=limit)
            output, rc, timed_out = proc.stdout, proc.returncode, False
        except subprocess.TimeoutExpired as e:
            output = (e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout) or ""
            rc, timed_out = None, True
        elapsed = time.perf_counter() - start
        self.log_file.write(output)
        self.log_file.flush()
        return {"cmd": shown, "rc": rc, "timed_out": timed_out, "seconds": round(elapsed, 1), "output": output,
                "limit": round(limit)}

    def section(self, name: str, status: str, seconds: float, **info) -> dict:
        entry = {"name": name, "status": status, "seconds": round(seconds, 1), **info}
        self.sections.append(entry)
        self.say(f"[gpu-check] {name}: {status} in {seconds:.1f} s")
        return entry

    # -- sections ------------------------------------------------------------------------------
    def environment(self) -> None:
        start = time.perf_counter()
        import platform
        # torch and CUDA as gpu_check.sh's preflight saw them (this process holds no CUDA context: the sections need the VRAM).
        info = {"python": sys.version.split()[0], "executable": sys.executable, "machine": platform.machine(), "cpus": os.cpu_count()}
        if self.args.preflight and Path(self.args.preflight).exists():
            info.update(json.loads(Path(self.args.preflight).read_text() or "{}"))
        if info.get("cuda_available"):
            smi = shutil.which("nvidia-smi")
            if smi:
                q = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
                info["driver"] = q.stdout.strip()
        for name in ("numpy", "scipy", "transformers", "einops", "safetensors", "av", "torchsde", "trampoline", "pytest"):
            try:
                info[name] = md.version(name)
            except md.PackageNotFoundError:
                info[name] = None
        manifest = json.loads((Path(self.args.kit) / "manifest.json").read_text())
        head, dirty = git_commit()
        info["kit"] = {"commit": manifest["commit"], "built": manifest["built"], "bytes": manifest["total_bytes"],
                       "comfyui": manifest["host"]["comfyui_version"],
                       "wheels": [f"{w['name']}=={w['version']}" for w in manifest["wheels"]]}
        info["commit"], info["dirty"] = head, dirty
        notes = []
        if head not in ("unknown", manifest["commit"]):
            notes.append(f"kit built at {manifest['commit'][:10]}, checking {head[:10]} (the host and wheels rarely change)")
        self.environment_info = info
        self.say(f"[gpu-check] python {info['python']}, torch {info.get('torch')} ({info.get('torch_file')}), "
                 f"{info.get('device', 'no CUDA device')}; kit {manifest['commit'][:10]}, ComfyUI {info['kit']['comfyui']}")
        self.section("environment", "ok", time.perf_counter() - start, info=info, notes=notes)

    def imports(self) -> None:
        r = self.run("imports", [sys.executable, "-c", PROBE, str(self.host), str(PACK_DIR), ",".join(IMPORTS), "0"],
                     self.caps["imports"])
        ok = r["rc"] == 0
        detail = r["output"].strip().splitlines()[-1:] if r["output"].strip() else []
        info = {}
        if ok:
            info["host_modules"] = len(json.loads(detail[0])["host_files"])
        self.section("imports", "ok" if ok else "FAILED", r["seconds"], detail="" if ok else r["output"][-2000:], **info)

    def tests(self) -> None:
        junit = self.out / "pytest.xml"
        measures = self.work / "measurements.json"
        env = dict(self.env, RHYMEFLOW_CUDA_REPORT=str(measures))
        if not self.smoke and "RHYMEFLOW_TEST_DEVICE" not in (PACK_DIR / "tests" / "conftest.py").read_text():
            self.section("tests", "FAILED", 0.0, detail="tests/conftest.py forces ComfyUI onto the CPU: it must honour "
                         "RHYMEFLOW_TEST_DEVICE=cuda (docs/gpu_check.md, 'conftest')")
            return
        r = self.run("tests", [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rsxf", "tests/test_cuda.py",
                               f"--junitxml={junit}"], self.caps["tests"], env)
        counts = junit_counts(junit)
        summary = next((line for line in reversed(r["output"].splitlines()) if re.search(r"\d+ (passed|failed|error)", line)), "")
        ok = r["rc"] == 0 and counts.get("failures", 0) == 0 and counts.get("errors", 0) == 0 and counts.get("tests", 0) > 0
        status = "TIMED OUT" if r["timed_out"] else ("ok" if ok else "FAILED")
        info = {"counts": counts, "summary": summary.strip("= "), "failed": failed_tests(junit)}
        if measures.exists():
            info["measurements"] = json.loads(measures.read_text())
        self.section("tests", status, r["seconds"], detail="" if ok else r["output"][-4000:], **info)

    def profile(self) -> None:
        js, mdp = self.work / "profile.json", self.out / "profile.md"
        args = SMOKE_PROFILE if self.smoke else GPU_PROFILE
        r = self.run("profile", [sys.executable, "-m", "tools.gpu_profile", *args, "--json", str(js), "--md", str(mdp)],
                     self.caps["profile"])
        ok = r["rc"] == 0 and js.exists()
        info = {"summary": json.loads(js.read_text())} if ok else {}
        self.section("profile", "TIMED OUT" if r["timed_out"] else ("ok" if ok else "FAILED"), r["seconds"],
                     detail="" if ok else r["output"][-3000:], **info)

    def bench(self) -> None:
        start = time.perf_counter()
        parts, configs = [], []
        if self.smoke:
            plan = [("tiny 32x32 (smoke)", SMOKE_BENCH)]
        elif self.args.bench == "suite":
            plan = [("suite gpu", ["--suite", "gpu", "--quick"])]
        else:
            from tools.bench import GPU_SUITE
            plan = [(f"{m} {s}", ["--model", m, "--size", s, "--rows", ",".join(rows), "--quick"]) for m, s, rows in GPU_SUITE]
            if self.args.bench_configs:
                keep = {c.strip() for c in self.args.bench_configs.split(",")}
                plan = [p for p in plan if p[0].replace(" ", ":") in keep]
        for i, (label, argv) in enumerate(plan):
            if self.remaining() - RESERVE_S < 30:
                configs.append({"config": label, "status": "not run (budget)"})
                continue
            md_path = self.work / f"bench_{i}.md"
            cap = SMOKE_CAPS["bench"] if self.smoke else self.remaining()
            r = self.run(f"bench {label}", [sys.executable, "-m", "tools.bench", *argv, "--out", str(md_path)], cap)
            rows = re.findall(r"^\[([^\]]+)\] ([\w+-]+): ([\d.]+) s \(ran (\d+) steps in ([\d.]+) s\)", r["output"], re.M)
            entry = {"config": label, "seconds": r["seconds"], "rows_logged": [
                {"config": c, "row": n, "estimate_s": float(e), "steps_run": int(k), "wall_s": float(w)} for c, n, e, k, w in rows]}
            if r["rc"] == 0 and md_path.exists():
                entry["status"] = "ok"
                parts.append(md_path.read_text())
            else:
                entry["status"] = "timed out (budget)" if r["timed_out"] else f"FAILED (rc {r['rc']})"
                entry["detail"] = r["output"][-2000:]
                parts.append(f"### {label}: {entry['status']}\n\nRows finished before it stopped: "
                             + (", ".join(f"{x['row']} {x['estimate_s']:.2f} s" for x in entry["rows_logged"]) or "none") + "\n")
            configs.append(entry)
        states = [c["status"] for c in configs]
        status = "FAILED" if any(st.startswith("FAILED") for st in states) else ("ok" if all(st == "ok" for st in states) else "partial")
        (self.out / "bench.md").write_text("\n".join(parts))
        self.section("bench", status, time.perf_counter() - start, configs=configs)

    # -- all -----------------------------------------------------------------------------------
    def main(self) -> int:
        self.caps = SMOKE_CAPS if self.smoke else GPU_CAPS
        self.say(f"[gpu-check] mode {self.args.mode}; budget {self.args.budget:.0f} s; out {self.out}")
        self.environment()
        self.imports()
        if self.sections[-1]["status"] == "ok":
            skip = set(filter(None, self.args.skip.split(",")))
            for name, fn in (("tests", self.tests), ("profile", self.profile), ("bench", self.bench)):
                if name in skip:
                    self.section(name, "skipped (--skip)", 0.0)
                elif self.remaining() - RESERVE_S < 20:
                    self.section(name, "not run (budget)", 0.0)
                else:
                    fn()
        return self.report()

    def report(self) -> int:
        failed = [s["name"] for s in self.sections if s["status"] in ("FAILED", "TIMED OUT")]
        total = sum(s["seconds"] for s in self.sections) + self.args.setup_seconds
        data = {"mode": self.args.mode, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "verdict": "FAILED: " + ", ".join(failed) if failed else "ok", "setup_seconds": self.args.setup_seconds,
                "total_seconds": round(total, 1), "budget_seconds": self.args.budget, "sections": self.sections}
        (self.out / "report.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
        (self.out / "report.md").write_text(report_markdown(data))
        self.say("")
        self.say(f"== RhymeFlow GPU check ({self.args.mode}): {data['verdict']} ==")
        self.say(f"  {'setup (venv + offline install)':32s} {self.args.setup_seconds:7.1f} s")
        for s in self.sections:
            self.say(f"  {s['name']:32s} {s['seconds']:7.1f} s  {s['status']}" + (f"  {s['summary']}" if isinstance(s.get('summary'), str) else ""))
        self.say(f"  {'total':32s} {total:7.1f} s")
        self.say(f"  report: {self.out / 'report.md'}")
        shutil.rmtree(self.work, ignore_errors=True)
        return 1 if failed else 0


def junit_counts(path: Path) -> dict:
    if not path.exists():
        return {}
    import xml.etree.ElementTree as ET
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}


def failed_tests(path: Path) -> list[str]:
    if not path.exists():
        return []
    import xml.etree.ElementTree as ET
    return [f"{c.get('name')}: {(c.find('failure') if c.find('failure') is not None else c.find('error')).get('message', '')[:300]}"
            for c in ET.parse(path).getroot().iter("testcase") if c.find("failure") is not None or c.find("error") is not None]


def report_markdown(data: dict) -> str:
    lines = [f"# RhymeFlow GPU check ({data['mode']})", "", f"- Verdict: **{data['verdict']}**", f"- Date: {data['date']}",
             f"- Total {data['total_seconds']:.0f} s (budget {data['budget_seconds']:.0f} s; set-up {data['setup_seconds']:.0f} s)", "",
             "| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.1f} |" for s in data["sections"]]
    for s in data["sections"]:
        lines += ["", f"## {s['name']}", ""]
        if s["name"] == "environment":
            lines += [f"- {k}: {v}" for k, v in s["info"].items()] + [f"- note: {n}" for n in s.get("notes", [])]
        elif s["name"] == "tests":
            lines += [f"- {s.get('summary', '')}", f"- counts: {s.get('counts')}"] + [f"- FAILED {f}" for f in s.get("failed", [])]
            for key, value in (s.get("measurements") or {}).items():
                lines.append(f"- {key}: {value}")
        elif s["name"] == "profile" and s.get("summary"):
            lines.append("See profile.md. " + "; ".join(
                f"{p['placement']}: active {p.get('active_ms', 0):.2f} ms, full {p.get('full_ms', 0):.2f} ms, ratio {p.get('ratio', 0):.3f}"
                + (f", GPU idle {p['gaps']['idle_share']:.0%}" if p.get("gaps") else "") for p in s["summary"].get("placements", [])))
        elif s["name"] == "bench":
            for c in s.get("configs", []):
                lines.append(f"- {c['config']}: {c['status']}" + (f" in {c['seconds']:.0f} s" if "seconds" in c else ""))
            lines.append("- Tables: bench.md")
        else:
            lines += [f"- {k}: {v}" for k, v in s.items() if k not in ("name", "status", "seconds", "detail")]
        if s.get("detail"):
            lines += ["", "```", s["detail"][-3000:], "```"]
    return "\n".join(lines) + "\n"


# ---- entry ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["base-view"]:
        ap = argparse.ArgumentParser(prog="gpu_kit base-view", description="links to the GPU image's packages from this venv")
        ap.add_argument("dir")
        args = ap.parse_args(argv[1:])
        target = Path(args.dir)
        shutil.rmtree(target, ignore_errors=True)
        versions = base_view(target)
        log(f"base view {target}: {len(versions)} distributions ({', '.join(DEVICE_BASE)} and their requirements)")
        return 0
    if argv[:1] == ["check"]:
        ap = argparse.ArgumentParser(prog="gpu_kit check", description="the GPU checks (run by tools/gpu_check.sh)")
        ap.add_argument("--mode", choices=("cuda", "cpu-smoke"), required=True)
        ap.add_argument("--kit", default=str(KIT_DIR))
        ap.add_argument("--out", default=str(PACK_DIR / "output" / "gpu_check"))
        ap.add_argument("--budget", type=float, default=480.0)
        ap.add_argument("--setup-seconds", type=float, default=0.0)
        ap.add_argument("--preflight", help="JSON of torch and the device, from gpu_check.sh")
        ap.add_argument("--bench", choices=("configs", "suite"), default="configs")
        ap.add_argument("--bench-configs", default="", help="e.g. 1.3b:480p,14b:480p (default: every configuration of --suite gpu)")
        ap.add_argument("--skip", default="", help="comma-separated sections to skip: tests, profile, bench")
        return Checks(ap.parse_args(argv[1:])).main()
    if argv[:1] == ["build"]:
        argv = argv[1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(KIT_DIR))
    ap.add_argument("--max-mb", type=float, default=MAX_KIT_BYTES / 1e6)
    args = ap.parse_args(argv)
    build(Path(args.out).resolve(), int(args.max_mb * 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
