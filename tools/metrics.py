"""Video fidelity against the dense reference (docs/algorithm.md §7), for the tools.

The definitions live in the shipped core, `rhymeflow_core/metrics.py`, so the RhymeFlowCompare node
and the tools (fidelity harness, `make demo`) score videos identically. Videos are float tensors
[F, H, W, 3] in [0, 1]; `compare(video, reference)` returns {'psnr', 'ssim', 'temporal_error'}.
"""
from __future__ import annotations

from rhymeflow_core.metrics import PSNR_CAP, compare, psnr, psnr_per_frame, ssim, ssim_per_frame, temporal_error

__all__ = ["PSNR_CAP", "compare", "psnr", "psnr_per_frame", "ssim", "ssim_per_frame", "temporal_error"]
