"""Video fidelity against a reference, as the RhymeFlow evaluation defines it (docs/algorithm.md §7),
and what the RhymeFlowCompare node shows: a side-by-side video and a plain-text report.

Videos are float tensors [F, H, W, C] in [0, 1] (ComfyUI IMAGE batches: one frame per batch entry).
PSNR is per frame, 10*log10(1/MSE) with MSE clamped at 1e-12 (so identical videos score 120 dB),
averaged over frames. SSIM is per frame with an 11x11 box window (zero padding, padded zeros counted
in the window mean), C1 = 0.01^2, C2 = 0.03^2, on all channels, averaged over the map and then over
frames, in float64. The temporal error is ours: the RMS difference between the frame-to-frame
changes of the two videos (0 when the motion matches exactly; undefined for a single frame).

Every metric works on a few frames at a time (at most CHUNK, and at most about 4 M values per chunk), so
an 81-frame 480p video needs a few hundred MB of working memory, not tens of GB; each frame's value is
computed exactly as on the whole video. `tools/metrics.py`
re-exports `psnr`, `ssim`, `temporal_error` and `compare` for the tools.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import RhymeFlowInputError

PSNR_CAP = 120.0   # 10*log10(1/1e-12): what identical frames score
CHUNK = 8          # frames per step of the frame-wise metrics at most (SSIM keeps ~10 float64 maps per frame)
CHUNK_VALUES = 1 << 22


def _chunks(video: torch.Tensor, n: int | None = None):
    """(start, stop) frame ranges covering `n` (default: all) frames of `video`, a few at a time."""
    n = video.shape[0] if n is None else n
    size = max(1, min(CHUNK, CHUNK_VALUES // max(1, video[0].numel())))
    for start in range(0, n, size):
        yield start, min(n, start + size)


def psnr_per_frame(video: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR of each frame in dB (float32, one value per frame)."""
    out = []
    for a, b in _chunks(video):
        mse = (video[a:b].float() - reference[a:b].float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
        out.append(10 * torch.log10(1.0 / mse))
    return torch.cat(out)


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    return float(psnr_per_frame(video, reference).mean())


def _box(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 11, stride=1, padding=5, count_include_pad=True)


def ssim_per_frame(video: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SSIM of each frame (float64, the map's mean per frame)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for a, b in _chunks(video):
        x = video[a:b].float().permute(0, 3, 1, 2).double()
        y = reference[a:b].float().permute(0, 3, 1, 2).double()
        mx, my = _box(x), _box(y)
        vx, vy, cxy = _box(x * x) - mx * mx, _box(y * y) - my * my, _box(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out.append(s.flatten(1).mean(1))
    return torch.cat(out)


def ssim(video: torch.Tensor, reference: torch.Tensor) -> float:
    return float(ssim_per_frame(video, reference).mean())


def temporal_error(video: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS of (video's frame-to-frame change - reference's); nan for fewer than two frames."""
    frames = video.shape[0]
    if frames < 2:
        return math.nan
    total, count = 0.0, 0
    for a, b in _chunks(video, frames - 1):   # frame pairs (k, k+1) for k in [a, b)
        dv = video[a:b + 1].float().diff(dim=0)
        dr = reference[a:b + 1].float().diff(dim=0)
        total += float((dv - dr).double().pow(2).sum())
        count += dv.numel()
    return math.sqrt(total / count)


def check_same_shape(candidate: torch.Tensor, reference: torch.Tensor, candidate_name: str = "candidate",
                     reference_name: str = "reference") -> None:
    """RhymeFlowInputError naming the mismatch and the fix, unless both are [F, H, W, C] of one shape."""
    for name, t in ((reference_name, reference), (candidate_name, candidate)):
        if t.dim() != 4 or t.shape[0] == 0:
            raise RhymeFlowInputError(f"'{name}' is not a batch of frames (shape {tuple(t.shape)}); connect the IMAGE "
                                      "output of a VAE Decode (or another node that outputs frames).")
    (fr, hr, wr, cr), (fc, hc, wc, cc) = reference.shape, candidate.shape
    if fr != fc:
        raise RhymeFlowInputError(
            f"'{reference_name}' has {fr} frames and '{candidate_name}' {fc}: compare videos of the same length. "
            "Sample both from the same empty latent (same length and batch size) and decode both the same way "
            "(same VAE Decode settings, no frames trimmed or interpolated on one side only).")
    if (hr, wr) != (hc, wc):
        raise RhymeFlowInputError(
            f"'{reference_name}' frames are {wr}x{hr} and '{candidate_name}' frames {wc}x{hc}: compare videos of the same "
            f"size. Sample both at the same width and height, or resize one with an Upscale Image node to {wr}x{hr}.")
    if cr != cc:
        raise RhymeFlowInputError(
            f"'{reference_name}' has {cr} colour channels and '{candidate_name}' {cc}: decode both the same way "
            "(an alpha channel on one side only is the usual cause).")


def compare(video: torch.Tensor, reference: torch.Tensor) -> dict:
    """{'psnr', 'ssim', 'temporal_error'} of `video` against `reference` (same shape)."""
    check_same_shape(video, reference, "video", "reference")
    return {"psnr": psnr(video, reference), "ssim": ssim(video, reference), "temporal_error": temporal_error(video, reference)}


# ---- what RhymeFlowCompare shows ---------------------------------------------------------------
@dataclass
class Timing:
    """Sampler times behind a comparison; any field may be unknown (None)."""
    reference_seconds: float | None = None
    candidate_seconds: float | None = None
    source: str = ""                  # where the numbers come from, in words
    estimated: bool = False           # the reference time is an estimate from the candidate's own run
    steps: int | None = None          # RhymeFlow runs: steps and passes
    full_passes: int | None = None
    active_passes: int | None = None
    # Dense steps that take the candidate's measured time (at this run's median full step), and the dense
    # steps of equal model cost as the schedule view estimates it (an active pass at `assumed_active_cost`).
    equal_time_steps: float | None = None
    equal_cost_steps: float | None = None
    measured_active_cost: float | None = None  # this run's active step time / its median full step
    assumed_active_cost: float | None = None


@dataclass
class Comparison:
    reference_name: str
    candidate_name: str
    frames: int
    width: int
    height: int
    psnr: float
    ssim: float
    temporal_error: float
    psnr_frames: list[float] = field(default_factory=list)
    timing: Timing | None = None

    @property
    def identical(self) -> bool:
        return self.psnr >= PSNR_CAP - 1e-3

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in ("reference_name", "candidate_name", "frames", "width", "height", "psnr", "ssim",
                                             "temporal_error", "psnr_frames")}
        if self.timing is not None:
            out["timing"] = dict(vars(self.timing))
        return out


@torch.no_grad()
def compare_videos(reference: torch.Tensor, candidate: torch.Tensor, reference_name: str = "reference",
                   candidate_name: str = "candidate", timing: Timing | None = None) -> Comparison:
    check_same_shape(candidate, reference, candidate_name, reference_name)
    candidate = candidate.to(reference.device)
    per_frame = psnr_per_frame(candidate, reference)
    return Comparison(reference_name, candidate_name, reference.shape[0], reference.shape[2], reference.shape[1],
                      psnr=float(per_frame.mean()), ssim=ssim(candidate, reference),
                      temporal_error=temporal_error(candidate, reference),
                      psnr_frames=[float(v) for v in per_frame], timing=timing)


def timing_from_reports(reports: list, label: str) -> Timing | None:
    """The candidate's sampling time from its RhymeFlow run reports (rhymeflow_core/report.py): the sum of
    its step times, against the dense time each run estimates from its own full steps (steps x the median
    full step; both exclude previews). Two experts (two runs) add up. None when no completed run has step times.

    Equal time: a dense step takes about one full step of the run, so dense at spent / median_full steps takes
    what the run took. Equal cost: full + active x r with the schedule view's r (a table measured on Wan 2.1
    1.3B); the two differ where this model's active pass costs another fraction of a full one."""
    from .schedule_view import active_cost

    runs = [r for r in reports if r.completed and r.step_seconds and r.estimated_dense_seconds > 0]
    if not runs:
        return None
    spent = sum(sum(r.step_seconds) for r in runs)
    dense = sum(r.estimated_dense_seconds for r in runs)
    steps = sum(r.steps for r in runs)
    full, active = sum(r.full_passes for r in runs), sum(r.active_passes for r in runs)
    equal_time = sum(sum(r.step_seconds) * r.steps / r.estimated_dense_seconds for r in runs)
    costs = [active_cost(len(r.keyframes) or 2, max(r.frames, 1)) for r in runs]
    equal_cost = sum(r.full_passes + r.active_passes * c for r, c in zip(runs, costs, strict=True))
    return Timing(reference_seconds=dense, candidate_seconds=spent, source=label, estimated=True, steps=steps,
                  full_passes=full, active_passes=active, equal_time_steps=equal_time, equal_cost_steps=equal_cost,
                  measured_active_cost=(equal_time - full) / active if active else None,
                  assumed_active_cost=sum(costs) / len(costs))


def format_report(c: Comparison) -> str:
    """The text RhymeFlowCompare shows on the node and outputs as STRING."""
    lines = [f"{c.candidate_name} vs {c.reference_name}: {c.frames} frame{'s' * (c.frames != 1)} of {c.width}x{c.height}"]
    if c.identical:
        lines.append(f"identical to {c.reference_name} (PSNR {PSNR_CAP:.0f} dB, the cap; SSIM 1)")
    else:
        worst = min(range(len(c.psnr_frames)), key=c.psnr_frames.__getitem__)
        lines.append(f"PSNR {c.psnr:.2f} dB (worst frame {worst}: {c.psnr_frames[worst]:.2f} dB)")
        lines.append(f"SSIM {c.ssim:.4f}")
    if math.isnan(c.temporal_error):
        lines.append("temporal error: n/a (one frame)")
    elif not c.identical:
        lines.append(f"temporal error {c.temporal_error:.4f} (0 = the same motion)")
    lines.append(_timing_line(c))
    if not c.identical:
        lines.append(f"Higher PSNR and SSIM, lower temporal error = closer to {c.reference_name}.")
    return "\n".join(lines)


def _timing_line(c: Comparison) -> str:
    t = c.timing
    if t is None or t.candidate_seconds is None:
        return ("time: not measured (a RhymeFlow sampler feeding the candidate reports it; otherwise type the sampler "
                "times into reference_seconds and candidate_seconds)")
    if t.reference_seconds is None:
        return f"time: {c.candidate_name} {t.candidate_seconds:.2f} s ({t.source}); {c.reference_name} unknown"
    saved = t.reference_seconds - t.candidate_seconds
    ratio = t.reference_seconds / t.candidate_seconds if t.candidate_seconds > 0 else math.inf
    verb = "saved" if saved >= 0 else "lost"
    if not t.estimated:
        return (f"time: {c.reference_name} {t.reference_seconds:.2f} s, {c.candidate_name} {t.candidate_seconds:.2f} s "
                f"({t.source}): {verb} {abs(saved):.2f} s, {ratio:.2f}x")
    lines = [f"time: {c.candidate_name} sampled {t.steps} steps ({t.full_passes} full + {t.active_passes} active passes) "
             f"in {t.candidate_seconds:.2f} s; dense would take about {t.reference_seconds:.2f} s (estimated from this "
             f"run's full steps): {verb} about {abs(saved):.2f} s, {ratio:.2f}x"]
    lines += _equal_steps_lines(t)
    lines.append(f"(from the {t.source})")
    return "\n".join(lines)


def _equal_steps_lines(t: Timing) -> list[str]:
    """Which dense step count matches the candidate: by measured time, and by estimated cost when they disagree."""
    if t.equal_time_steps is None:
        return []
    n = max(1, round(t.equal_time_steps))
    lines = [f"equal time: dense at {n} steps takes about as long as this run (measured: a dense step ~ one full "
             f"step of this run)"]
    if t.equal_cost_steps is not None and max(1, round(t.equal_cost_steps)) != n:
        measured = "" if t.measured_active_cost is None else f", here an active step took {t.measured_active_cost:.2f} of a full one"
        lines.append(f"equal model cost (the schedule view's estimate, an active pass = {t.assumed_active_cost:.3f} of a full "
                     f"one, measured on Wan 2.1 1.3B 480p): dense at {max(1, round(t.equal_cost_steps))} steps; time and "
                     f"cost disagree on this model and machine{measured}. Match by time to compare what you wait for.")
    return lines


def summary_line(c: Comparison) -> str:
    """One line for the schedule view of the sampler that made the candidate: the last comparison."""
    quality = (f"identical to {c.reference_name}" if c.identical else
               f"PSNR {c.psnr:.2f} dB, SSIM {c.ssim:.4f} vs {c.reference_name}")
    t = c.timing
    if t is None or t.candidate_seconds is None or t.reference_seconds is None:
        time_part = "time not measured"
    else:
        saved = t.reference_seconds - t.candidate_seconds
        time_part = f"{'saved' if saved >= 0 else 'lost'} {'about ' if t.estimated else ''}{abs(saved):.2f} s"
        if t.equal_time_steps is not None:
            time_part += f"; dense at {max(1, round(t.equal_time_steps))} steps takes the same time"
    return f"last comparison: {quality}, {time_part}"


# ---- the side-by-side video -------------------------------------------------------------------
def _label_bar(texts: list[str], widths: list[int], gap: int, channels: int) -> torch.Tensor:
    """A dark strip [h, W, C] with each panel's name written over it (PIL's built-in font)."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(10, min(48, min(widths) // 24))
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    height = size + 8
    total = sum(widths) + gap * (len(widths) - 1)
    image = Image.new("RGB", (total, height), (24, 24, 24))
    draw = ImageDraw.Draw(image)
    x = 0
    for text, w in zip(texts, widths, strict=True):
        while len(text) > 3 and draw.textlength(text, font=font) > w - 6:
            text = text[:-4] + "..."
        draw.text((x + 4, 3), text, fill=(235, 235, 235), font=font)
        x += w + gap
    bar = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(height, total, 3).float() / 255
    if channels != 3:
        bar = torch.cat([bar, torch.ones(height, total, channels - 3)], dim=2) if channels > 3 else bar[..., :channels]
    return bar


@torch.no_grad()
def side_by_side(reference: torch.Tensor, candidate: torch.Tensor, gain: float = 4.0, reference_name: str = "reference",
                 candidate_name: str = "candidate", labels: bool = True) -> torch.Tensor:
    """IMAGE batch [F, bar + H, 3W + 2 gaps, C]: reference | candidate | |candidate - reference| x gain, per frame,
    under a strip naming the three panels."""
    check_same_shape(candidate, reference, candidate_name, reference_name)
    frames, height, width, channels = reference.shape
    reference = reference.float().cpu()
    candidate = candidate.float().cpu()
    diff = ((candidate - reference).abs() * gain).clamp(0, 1)
    gap_px = max(2, width // 64)
    gap = torch.ones(frames, height, gap_px, channels)
    strip = torch.cat([reference, gap, candidate, gap, diff], dim=2)
    if not labels:
        return strip
    gain_text = f"{gain:g}"
    bar = _label_bar([reference_name, candidate_name, f"difference x{gain_text}"], [width] * 3, gap_px, channels)
    return torch.cat([bar.unsqueeze(0).expand(frames, -1, -1, -1), strip], dim=1)
