#!/usr/bin/env bash
# The GPU check, offline, from the kit (docs/gpu_check.md). From the repository root:
#
#   bash tools/gpu_check.sh                  # on a CUDA machine: CUDA tests, profile, benchmark (<= 8 min on an H100/H200)
#   bash tools/gpu_check.sh --cpu-smoke      # every code path at toy size on the CPU (what CI runs)
#
# Options: --kit DIR (default .gpu-kit), --out DIR (default output/gpu_check), --python PY (the interpreter
# that has torch; default $GPU_CHECK_PYTHON or python3), --base-site DIR (the packages to see instead of
# PY's own: CI's stand-in for the GPU image), --budget SECONDS (default 480), --bench suite|configs,
# --bench-configs 1.3b:480p,..., --skip tests,profile,bench.
#
# It makes a fresh venv that sees PY's packages (torch and the rest of the GPU image), installs the
# kit's wheels into it with `pip install --no-index` (no network), and runs `tools/gpu_kit.py check`,
# which writes report.md, report.json, log.txt, pytest.xml, profile.md and bench.md to the out folder.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
started=$(date +%s)

mode=cuda
kit="$root/.gpu-kit"
out="$root/output/gpu_check"
py="${GPU_CHECK_PYTHON:-python3}"
base_site=""
budget=480
check_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) mode=cpu-smoke ;;
    --kit) kit="$2"; shift ;;
    --out) out="$2"; shift ;;
    --python) py="$2"; shift ;;
    --base-site) base_site="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --bench|--bench-configs|--skip) check_args+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
kit="$(cd "$kit" 2>/dev/null && pwd || echo "$kit")"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
say() { echo "[gpu-check] $*" | tee -a "$out/log.txt"; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
scratch_pre="$scratch/preflight.json"
: > "$out/log.txt"

if [ ! -f "$kit/manifest.json" ] || [ ! -d "$kit/host/ComfyUI" ] || [ ! -f "$kit/requirements.txt" ]; then
  say "no kit at $kit: build it with 'make gpu-kit' (a machine with network), then carry .gpu-kit along"
  exit 2
fi
if ! command -v "$py" >/dev/null; then
  say "no python '$py': pass --python /path/to/python3 (the one that has torch)"
  exit 2
fi

# The machine's own packages (torch, ... : the kit never carries them) and, unless --cpu-smoke, CUDA.
base_dirs="$base_site"
set +e
"$py" - "$mode" "$base_site" "$kit/manifest.json" > "$out/.preflight" 2>&1 <<'PY'
import importlib, json, site, sys
mode, base_site, manifest = sys.argv[1], sys.argv[2], sys.argv[3]
if base_site:
    sys.path.insert(0, base_site)
missing = []
for name in json.load(open(manifest))["expects_on_machine"]["modules"]:
    try:
        importlib.import_module(name)
    except Exception as e:   # noqa: BLE001 - any failure to import is a missing package here
        missing.append(f"{name} ({type(e).__name__}: {e})")
if missing:
    print("MISSING " + "; ".join(missing))
    sys.exit(4)
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__} from {torch.__file__}; CUDA available: {cuda}" + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
info = {"torch": torch.__version__, "torch_file": torch.__file__.rsplit("/", 1)[0], "cuda_available": cuda, "torch_cuda": torch.version.cuda}
if cuda:
    p = torch.cuda.get_device_properties(0)
    info.update(device=torch.cuda.get_device_name(0), device_memory_gb=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
print("ENV " + json.dumps(info))
if not base_site:
    print("SITES " + " ".join(site.getsitepackages() + [site.getusersitepackages()]))
if mode == "cuda" and not torch.cuda.is_available():
    sys.exit(3)
PY
rc=$?
set -e
cat "$out/.preflight" >> "$out/log.txt"
if [ $rc -eq 4 ]; then
  say "$py lacks packages the GPU image has and the kit does not carry: $(grep ^MISSING "$out/.preflight" | cut -c9-)"
  say "use the python that has them (--python), or carry them as wheels (docs/gpu_check.md)"
  exit 2
elif [ $rc -eq 3 ]; then
  say "REFUSED: no CUDA device. $(head -1 "$out/.preflight")"
  say "This check proves RhymeFlow's CUDA paths (exactness, pinned host cache, memory, speed) and needs an NVIDIA GPU"
  say "that torch sees. To rehearse every code path on the CPU at toy size, run: bash tools/gpu_check.sh --cpu-smoke"
  exit 3
elif [ $rc -ne 0 ]; then
  say "preflight with $py failed:"; cat "$out/.preflight"; exit 2
fi
say "$(head -1 "$out/.preflight")"
if [ -z "$base_dirs" ]; then
  base_dirs="$(grep ^SITES "$out/.preflight" | cut -c7-)"
fi
grep ^ENV "$out/.preflight" | cut -c5- > "$scratch_pre"
rm -f "$out/.preflight"

# A fresh venv that sees the base packages through a .pth (python -m venv --system-site-packages alone
# would miss them when $py is itself a venv, as on the GPU image), then the kit's wheels, offline.
venv="${GPU_CHECK_VENV:-$scratch/venv}"   # GPU_CHECK_VENV=DIR keeps the venv after the run
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
  say "GPU_CHECK_VENV=$venv exists and is not a venv: not replacing it"; exit 2
fi
rm -rf "$venv"
system_site=(--system-site-packages)
[ -n "$base_site" ] && system_site=()   # CI: only the stand-in for the GPU image, nothing of this machine
"$py" -m venv --without-pip "${system_site[@]}" "$venv"
vpy="$venv/bin/python"
site_dir="$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for d in $base_dirs; do if [ -d "$d" ]; then echo "$d"; fi; done > "$site_dir/_rhymeflow_gpu_check_base.pth"
say "venv $venv (python $("$vpy" -c 'import platform; print(platform.python_version())'))"
# No network and no index: only the kit's wheels (this machine's pip settings may name other sources).
if "$py" -m pip --version >/dev/null 2>&1; then
  set +e
  env $(env | grep -o '^PIP_[A-Z_]*' | sed 's/^/-u /') PIP_CONFIG_FILE=/dev/null \
    "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
    --find-links "$kit/wheels" --target "$site_dir" -r "$kit/requirements.txt" >> "$out/log.txt" 2>&1
  rc=$?
  set -e
  if [ $rc -ne 0 ]; then
    tail -20 "$out/log.txt"; say "offline install of the kit's wheels failed (pip exit $rc)"; exit 2
  fi
else   # no pip next to $py: a wheel is a zip of what goes into site-packages
  say "no pip with $py: unpacking the kit's wheels into the venv"
  set +e
  "$vpy" - "$kit" "$site_dir" <<'PY' 2>&1 | tee -a "$out/log.txt"
import pathlib, sys, zipfile
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
kit, site = pathlib.Path(sys.argv[1]), sys.argv[2]
tags = set(sys_tags())
for line in (kit / "requirements.txt").read_text().split():
    name, version = line.split("==")
    for whl in sorted((kit / "wheels").glob("*.whl")):
        n, v, _, t = parse_wheel_filename(whl.name)
        if n == canonicalize_name(name) and str(v) == version and t & tags:
            zipfile.ZipFile(whl).extractall(site)
            break
    else:
        sys.exit(f"no wheel of {line} in the kit installs on this python")
PY
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || { say "offline install of the kit's wheels failed"; exit 2; }
fi
say "installed offline from the kit: $(tr '\n' ' ' < "$kit/requirements.txt")"

if [ "$mode" = cpu-smoke ]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"   # toy-size tensors: more threads only contend
fi
setup_s=$(( $(date +%s) - started ))
set +e
"$vpy" -m tools.gpu_kit check --mode "$mode" --kit "$kit" --out "$out" --budget $(( budget - setup_s )) \
  --setup-seconds "$setup_s" --preflight "$scratch_pre" ${check_args[@]+"${check_args[@]}"}
rc=$?
set -e
exit $rc
