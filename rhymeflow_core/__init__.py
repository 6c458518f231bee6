"""RhymeFlow core: schedule, keyframes, solvers, sampler loop, per-model active-pass adapters, cache.

Importable with only ComfyUI's `comfy/` package on the path (no `comfy_api`), so benchmarks can
run on a bare GPU machine.
"""
