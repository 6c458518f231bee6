"""What the fidelity harness samples with: settings profiles, prompt sets, published anchors, pass costs.

Profiles are sampler settings, independent of the method under test: `wan` is ComfyUI's Wan 2.1
template (ModelSamplingSD3 shift 8, cfg 6, uni_pc) and the default; `cfg5` and `shift5` are the
variants issue 17 asks to report; `demo` is the setting of the older tables (shift 3, cfg 4), kept
for continuity with them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    shift: float
    cfg: float
    solver: str = "uni_pc"
    note: str = ""


PROFILES: dict[str, Profile] = {
    "wan": Profile(8.0, 6.0, note="ComfyUI's Wan 2.1 template settings (default)"),
    "cfg5": Profile(8.0, 5.0, note="Wan settings with cfg 5"),
    "shift5": Profile(5.0, 6.0, note="Wan settings with shift 5"),
    "demo": Profile(3.0, 4.0, note="the older tables' setting (the demo model's training shift)"),
}
PROFILE_NAMES = tuple(PROFILES)

# The demo model was trained on 13 frames (docs/demo_model.md); Wan's usual 81 frames are 21 latent
# frames. Its RoPE is relative, so 21 frames run, but they are outside its training length.
TRAINED_FRAMES = 13
WAN_FRAMES = 21

# Step-reduction sensitivity of real video DiTs: dense sampling with a share of the steps against the
# 50-step video of the same seed. Source: ScalingCache (ICLR 2026), its README table.
ANCHORS = [
    # (model, share of the steps, PSNR dB, SSIM or None)
    ("Wan 2.1 1.3B", 0.4, 14.5, 0.52),
    ("Wan 2.1 14B", 0.5, 15.8, None),
    ("HunyuanVideo", 0.5, 17.6, None),
]
ANCHOR_SOURCE = "ScalingCache (ICLR 2026), README table; reference = the 50-step video, same seed"

# Real-size cost of an active pass: 0.109 of a full pass for Wan 2.1 1.3B at 480p with 2 of 21 latent
# frames as keyframes (9.5 % of the rows; docs/algorithm.md §6). Other row shares scale linearly.
REAL_RATIO, REAL_ROWS = 0.109, 2 / 21


def real_ratio(keyframes: int, frames: int) -> float:
    """Active/full cost of a real-size model for a pass over `keyframes` of `frames` frames."""
    return REAL_RATIO * (keyframes / frames) / REAL_ROWS


# Prompts are the demo grammar's (rhymeflow_core/demo_prompt.py). `simple`: one shape, no cut.
# `busy`: the most the grammar allows (three shapes, cuts and fades), the nearest to real video's
# many objects and shot changes without retraining.
PROMPTS = [
    "a red circle moves right",
    "a blue square moves left",
    "a green triangle moves up",
    "a yellow circle moves down",
    "a white square falls",
    "a magenta circle bounces",
    "an orange triangle stays",
    "a cyan square moves right and a red triangle moves left",
    "a blue circle falls and a yellow square bounces",
    "a green square stays and a white circle moves up",
    "a red circle moves right; then a blue square falls",
    "a yellow triangle moves left; then a green circle moves right",
    "a white circle bounces; fade to a magenta square moves down",
    "a cyan triangle falls; fade to an orange circle stays",
    "a red square moves up and a blue circle moves down; then a yellow triangle bounces",
    "an orange square moves left and a cyan circle bounces and a white triangle stays",
]
BUSY_PROMPTS = [
    "an orange square moves left and a cyan circle bounces and a white triangle stays",
    "a red square moves up and a blue circle moves down and a green triangle falls; then a yellow circle bounces "
    "and a magenta square moves right",
    "a white circle bounces and a red triangle moves left; fade to a blue square falls and a cyan circle moves up "
    "and an orange triangle stays",
    "a green circle moves right and a magenta triangle bounces and a yellow square stays; then a red circle falls "
    "and a white square moves left",
    # 5-16: the same make-up (three shapes, then a cut or fade to two or three more) for the 16-prompt run of issue 17.
    "a blue triangle moves right and an orange circle falls and a cyan square stays; then a white triangle bounces "
    "and a red square moves up",
    "a yellow square moves down and a green circle bounces and a magenta triangle moves left; fade to a blue circle "
    "stays and an orange square moves right and a white triangle falls",
    "a red triangle stays and a white square moves right and a cyan circle moves down; then a green square bounces "
    "and a yellow triangle moves left",
    "a magenta circle falls and a blue square moves up and an orange triangle moves right; fade to a red circle "
    "moves left and a green triangle stays",
    "a cyan triangle bounces and a yellow circle moves left and a red square falls; then a white circle moves right "
    "and a blue triangle moves down and a magenta square stays",
    "a white square moves up and an orange triangle moves down and a green circle stays; fade to a cyan square "
    "bounces and a red triangle moves right",
    "a blue circle moves left and a red triangle bounces and a yellow square moves right; then a magenta circle "
    "falls and a green square moves up",
    "an orange circle stays and a cyan square falls and a white triangle moves left; fade to a yellow circle moves "
    "down and a blue square bounces and a red triangle stays",
    "a green triangle moves down and a magenta square moves right and a blue circle bounces; then an orange square "
    "moves left and a white circle falls",
    "a red circle bounces and a yellow triangle stays and a cyan square moves up; fade to a green circle moves left "
    "and a magenta triangle falls",
    "a white triangle falls and a blue square stays and an orange circle moves right; then a red square bounces and "
    "a cyan triangle moves down and a yellow circle moves left",
    "a magenta square moves left and a green circle moves up and a white triangle bounces; fade to an orange triangle "
    "stays and a blue circle moves right",
]
# `mixed`: one, two and three shapes (the last with a cut), for small runs across profiles.
PROMPT_SETS = {"all": PROMPTS, "simple": PROMPTS[:7], "mixed": PROMPTS[2::6], "busy": BUSY_PROMPTS}
SEEDS = (1, 2)
