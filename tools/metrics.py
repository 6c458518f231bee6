"""Video fidelity against the dense reference, as the RhymeFlow evaluation defines it (docs/algorithm.md §7).

Videos are float tensors [F, H, W, 3] in [0, 1]. PSNR is per frame, 10*log10(1/MSE) with MSE clamped
at 1e-12, averaged over frames. SSIM is per frame with an 11x11 box window (zero padding, padded
zeros counted in the window mean), C1 = 0.01^2, C2 = 0.03^2, on all three channels, averaged over the
map and then over frames. The temporal error is ours: the RMS difference between the frame-to-frame
changes of the two videos (0 when the motion matches exactly).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    mse = (video.float() - reference.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


def _box(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 11, stride=1, padding=5, count_include_pad=True)


def ssim(video: torch.Tensor, reference: torch.Tensor) -> float:
    x = video.float().permute(0, 3, 1, 2).double()
    y = reference.float().permute(0, 3, 1, 2).double()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _box(x), _box(y)
    vx, vy, cxy = _box(x * x) - mx * mx, _box(y * y) - my * my, _box(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.flatten(1).mean(1).mean())


def temporal_error(video: torch.Tensor, reference: torch.Tensor) -> float:
    dv, dr = video.float().diff(dim=0), reference.float().diff(dim=0)
    return float((dv - dr).pow(2).mean().sqrt())


def compare(video: torch.Tensor, reference: torch.Tensor) -> dict:
    if video.shape != reference.shape:
        raise ValueError(f"videos differ in shape: {tuple(video.shape)} vs {tuple(reference.shape)}")
    return {"psnr": psnr(video, reference), "ssim": ssim(video, reference), "temporal_error": temporal_error(video, reference)}
