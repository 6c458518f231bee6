"""Write example_workflows/*.json (UI format) from the builders in tools/workflows.py.

Run: .venv/bin/python -m tools.make_workflows   (needs the host: `make test` or `make demo` sets it up)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import PACK_DIR, bootstrap, load_nodes

DEMO_NOTE = """## RhymeFlow demo (the pack's small trained model, runs on a CPU)
Two branches on the same model, prompt, seed and steps, then a comparison:
* **Dense** (green group): ordinary sampling, every frame at every step (solver uni_pc).
* **RhymeFlow** (blue group): **RhymeFlow Patch Model -> CFGGuider -> RhymeFlow Sampler**, with RhymeFlow Keyframes.
* **Compare** (purple group): **RhymeFlow Compare Videos** shows on the node how close RhymeFlow is to dense (PSNR, SSIM,
  temporal error) and the time it saved; the preview under it plays dense | RhymeFlow | difference x4 (black = identical).

Settings of the RhymeFlow Sampler:
* `preset` custom here, so the widgets count (and `make demo --warmup N` can change the warm-up); pick
  quality / balanced / fast to let the preset scale warm-up and strides to the step count instead.
* `warmup_steps` 6 of 30: ordinary steps before any frame skips (the main quality knob).
* strides 3-5: a full pass every 3 steps early, every 5 late; the steps in between compute only the keyframes.
* `RhymeFlow Keyframes` count 2: first and last frame plus the semantic scan's picks (the release setting).

The demo model draws coloured shapes from prompts like `a red circle moves right; then a blue square falls`
(see the prompt node's tooltip for the words it knows). The empty latent of 128x128x49 is 16x16x13 latent
pixels, decoded exactly to 13 frames of 32x32 and shown 4x larger. For real videos swap the demo model,
prompt and decode nodes for your Wan loader, text encoder and VAE Decode; the RhymeFlow nodes stay.
To ask whether RhymeFlow beats simply using fewer steps, open `rhymeflow_compare_demo`.

The drawing under RhymeFlow Sampler is the schedule (latent frames down, steps across): grey warm-up,
amber full passes at rhythmic points, blue where only keyframes are computed in active passes, dark where
a frame skips. It updates as you change widgets; after a run it shows the keyframes chosen and the time saved."""

COMPARE_NOTE = """## Does RhymeFlow beat fewer steps? (demo model; do the same on your own)
Three videos from the same model, prompt, seed and noise:
* **Dense** (green): 20 ordinary steps, the reference.
* **RhymeFlow** (blue): the same 20 steps with preset balanced (warm-up 4, strides 3-5): 9 full passes and 11
  passes that compute only the keyframes.
* **Fewer steps** (amber): ordinary sampling with 11 steps, which take as long as the RhymeFlow run for the demo
  model (measured on a 2-core CPU: RhymeFlow's compare node said `equal time: dense at 11 steps`, and 10 in a
  second, less loaded run).

The purple group scores both against dense. Each **RhymeFlow Compare Videos** node shows PSNR (dB), SSIM and
temporal error on the node; higher PSNR / SSIM and lower temporal error = closer to dense. The RhymeFlow one
also shows the time RhymeFlow saved and `equal time: dense at N steps`, measured in this very run on your
machine: if N is not 11, set the fewer-steps scheduler to N and queue again for a fair match (and where the
schedule view's cost estimate gives another N, it shows that too). The RhymeFlow Sampler's drawing then shows
the last comparison under its schedule.

**Honest result on the demo model:** fewer dense steps win at equal time. In one run here (2026-11-30),
against dense at 20 steps: RhymeFlow 20.56 dB, dense at 11 steps 23.30 dB (docs/fidelity.md has the
full table). That is a fidelity question for the method on this small model; check your own model.

**On your own model**: keep this layout and swap the demo model, prompts and decode for your loader,
text encoder and VAE Decode (decode all three the same way). Keep the seed, video size and length shared;
the compare node refuses videos of different length or size and says what to change."""

TWO_EXPERT_NOTE = """## Wan 2.2 A14B style: two experts with RhymeFlow
The high-noise expert runs the first 10 of 20 steps, the low-noise expert the rest (SplitSigmas at 10).
Each expert has its own RhymeFlow Patch Model and its own RhymeFlow Sampler; the split is a
synchronisation point (every frame is at the same noise level there) and no cache crosses it.
High-noise: warm-up 4 of its 10 steps, strides 2-3 (composition is decided here).
Low-noise: warm-up 1, strides 3-5 (details; this is where most of the saving is).
Both samplers use preset custom: a preset would scale the warm-up to each expert's slice of steps.
The demo model stands in for both experts here. Replace the two demo models with your Wan 2.2 high-noise / low-noise
UNETLoaders, or start from `rhymeflow_wan22_a14b_t2v.json`."""

WAN21_NOTE = """## Wan 2.1 T2V 1.3B with RhymeFlow KSampler (480p, 81 frames)
Files (ComfyUI's Wan templates use the same): `diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors`,
`text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`, `vae/wan_2.1_vae.safetensors`.

**RhymeFlow KSampler** is KSampler with RhymeFlow inside (no RhymeFlow Patch Model node needed):
* `preset` balanced: warm-up 20 % of the steps (6 of 30), strides 3-5, the paper's release setting; about
  2x less model compute at 480p. quality = warm-up 30 %, strides 2-3; fast = warm-up 15 %, strides 4-5; custom =
  the widgets below as set. The drawing on the node shows the schedule and updates as you change them.
* `sampler_name` uni_pc, `scheduler` simple, cfg 6, shift 8 (ModelSamplingSD3): the usual Wan 2.1 settings.
* `context` kv_cache / `cache_device` auto: fastest; the cache (about 11 GB at 480p) goes to the GPU if it fits.
* RhymeFlow Keyframes count 2: first and last latent frame denoised every step. Raise it for scenes with cuts.
Use 50 steps for the paper's setting. After a run the node shows the keyframes chosen and the time saved."""

WAN22_NOTE = """## Wan 2.2 A14B T2V: two experts, each with RhymeFlow (480p, 81 frames, 20 steps)
Files: `diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors`,
`diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors`, `text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`,
`vae/wan_2.1_vae.safetensors` (Wan 2.2 A14B uses the Wan 2.1 VAE).

One BasicScheduler (simple, 20 steps) split by SplitSigmas at 10: the high-noise expert samples steps 0-9 from
RandomNoise, the low-noise expert steps 10-19 from the first latent with DisableNoise (shift 8, cfg 3.5, euler).
Each expert has its own RhymeFlow Patch Model, CFGGuider and RhymeFlow Sampler; the split is a
synchronisation point and no cache crosses it.
* High-noise sampler: preset custom, warm-up 4 of its 10 steps, strides 2-3 (composition and motion are set here).
* Low-noise sampler: preset custom, warm-up 1, strides 3-5 (details; most of the saving).
A preset would scale the warm-up to each expert's own 10 steps; custom keeps the split above."""


I2V_COMMON = """* Conditioned latent frames (the start image; start and end for first-last) are always keyframes:
  RhymeFlow adds them to the keyframes it picks, so they never skip steps.
* Put your image into ComfyUI's `input/` folder and pick it in Load Image."""

WAN21_I2V_NOTE = """## Wan 2.1 I2V 14B with RhymeFlow KSampler (480p, 81 frames)
Files: `diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors`, `clip_vision/clip_vision_h.safetensors`,
`text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`, `vae/wan_2.1_vae.safetensors`.

WanImageToVideo puts the start image (and its mask) into every frame's input channels and the CLIP-vision
image tokens into cross-attention; RhymeFlow's active passes carry both. Preset balanced (warm-up 20 %,
strides 3-5), uni_pc, cfg 6, shift 8, keyframes count 2.
""" + I2V_COMMON

WAN21_FLF2V_NOTE = """## Wan 2.1 FLF2V 14B (first and last frame) with RhymeFlow KSampler (81 frames)
Files: `diffusion_models/wan2.1_flf2v_720p_14B_fp16.safetensors`, `clip_vision/clip_vision_h.safetensors`,
`text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`, `vae/wan_2.1_vae.safetensors`.

WanFirstLastFrameToVideo conditions the first and the last latent frame (both always keyframes) and sends
both images' CLIP-vision tokens (2 x 257) to cross-attention. Same RhymeFlow settings as the I2V example.
""" + I2V_COMMON

WAN22_I2V_NOTE = """## Wan 2.2 A14B I2V: two experts, each with RhymeFlow (480p, 81 frames, 20 steps)
Files: `diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors`,
`diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors`, `text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`,
`vae/wan_2.1_vae.safetensors`. Wan 2.2 I2V has no CLIP-vision input.

The T2V two-expert layout (SplitSigmas at 10; high-noise warm-up 4 of its 10 steps, strides 2-3; low-noise
warm-up 1, strides 3-5) with WanImageToVideo's conditioning and latent.
""" + I2V_COMMON

WAN22_TI2V_NOTE = """## Wan 2.2 TI2V-5B image-to-video with RhymeFlow KSampler (1280x704, 121 frames, 24 fps)
Files: `diffusion_models/wan2.2_ti2v_5B_fp16.safetensors`, `text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`,
`vae/wan2.2_vae.safetensors` (48-channel latent, 16x spatial compression).

Wan22ImageToVideoLatent keeps the start image as a clean first latent frame (noise mask 0): the model then
gets one timestep per frame, and RhymeFlow's active passes give each keyframe its own. Disconnect
start_image for text-to-video. Preset balanced, uni_pc, cfg 5, shift 8.
""" + I2V_COMMON


def main() -> None:
    bootstrap()
    load_nodes()
    from tools.workflows import (
        api_to_ui,
        compare_layout,
        compare_prompt,
        demo_layout,
        demo_prompt,
        two_expert_prompt,
        wan21_i2v_prompt,
        wan21_t2v_prompt,
        wan22_a14b_i2v_prompt,
        wan22_a14b_t2v_prompt,
        wan22_ti2v_5b_prompt,
    )
    out = PACK_DIR / "example_workflows"
    out.mkdir(exist_ok=True)
    demo, compare = demo_prompt(save_latents=False), compare_prompt()
    laid_out = {"rhymeflow_demo": demo_layout(demo), "rhymeflow_compare_demo": compare_layout(compare)}
    for name, prompt, note in [("rhymeflow_demo", demo, DEMO_NOTE),
                               ("rhymeflow_compare_demo", compare, COMPARE_NOTE),
                               ("rhymeflow_wan22_two_experts_demo", two_expert_prompt(), TWO_EXPERT_NOTE),
                               ("rhymeflow_wan21_t2v_1.3b", wan21_t2v_prompt(), WAN21_NOTE),
                               ("rhymeflow_wan22_a14b_t2v", wan22_a14b_t2v_prompt(), WAN22_NOTE),
                               ("rhymeflow_wan21_i2v_14b", wan21_i2v_prompt(), WAN21_I2V_NOTE),
                               ("rhymeflow_wan21_flf2v_14b", wan21_i2v_prompt(first_last=True), WAN21_FLF2V_NOTE),
                               ("rhymeflow_wan22_a14b_i2v", wan22_a14b_i2v_prompt(), WAN22_I2V_NOTE),
                               ("rhymeflow_wan22_ti2v_5b", wan22_ti2v_5b_prompt(), WAN22_TI2V_NOTE)]:
        (out / f"{name}.json").write_text(json.dumps(api_to_ui(prompt, [note], laid_out.get(name)), indent=1) + "\n")
        print("wrote", out / f"{name}.json")


if __name__ == "__main__":
    main()
