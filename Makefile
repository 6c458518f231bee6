# The README's two commands. Both set up what they need on a fresh machine (idempotent):
# a venv with torch and the ComfyUI 0.3.75 host (or COMFYUI_PATH=/path/to/ComfyUI).
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export VENV
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-fast lint workflows bench clean

setup:
	@bash tools/setup_host.sh

demo: setup
	@$(PY) -m tools.demo $(ARGS)

lint: setup
	@$(PY) -m ruff check .

test: setup lint
	@$(PY) -m pytest

# The quick loop while editing: unit and exactness tests only (under a minute on 2 cores); `make test` runs everything.
test-fast: setup
	@$(PY) -m pytest -m "not slow"

workflows: setup
	@$(PY) -m tools.make_workflows

bench: setup   # e.g. make bench ARGS="--suite gpu --quick --out docs/bench_gpu.md"
	@$(PY) -m tools.bench $(ARGS)

clean:
	rm -rf .venv .host

.PHONY: gpu-kit gpu-check

gpu-kit: setup   # the offline GPU check kit in .gpu-kit/: host tree, wheels, manifest (docs/gpu_check.md)
	@$(PY) -m tools.gpu_kit

gpu-check: setup   # CUDA tests, profile and benchmark on this machine's GPU; ARGS=--cpu-smoke rehearses them on the CPU
	@[ -f .gpu-kit/manifest.json ] || $(PY) -m tools.gpu_kit
	@bash tools/gpu_check.sh --python $(PY) $(ARGS)
