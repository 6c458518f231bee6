"""The pack's workflows, built as ComfyUI API-format prompts, and conversion to/from UI format.

`example_workflows/*.json` are generated from these builders by `tools/make_workflows.py`
(UI format, as the ComfyUI frontend saves them); the tests convert them back and run them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NEGATIVE = ""  # the demo model was trained with an all-zero (empty) prompt as its unconditional input
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL_NODES = {"Note", "MarkdownNote"}
DEMO_PROMPT = "a red circle moves right; then a blue square falls"


def _link(node: str, output: int = 0) -> list:
    return [node, output]


def demo_prompt(prompt: str = DEMO_PROMPT, seed: int = 42, steps: int = 30, frames: int = 49,
                width: int = 128, height: int = 128, cfg: float = 4.0, shift: float = 3.0, solver: str = "uni_pc",
                warmup: int = 6, min_stride: int = 3, max_stride: int = 5, keyframes: int = 2,
                context: str = "kv_cache", dense: bool = True, rhymeflow: bool = True, save_latents: bool = True,
                compare: bool = True, preset: str = "custom") -> dict:
    """Dense and RhymeFlow side by side on the demo model: same prompt, seed and sigmas, and (with both
    branches and `compare`) RhymeFlowCompare on the two decoded videos (node 30, its preview 31).

    128x128x49 is an empty latent of 16x16x13, which the demo model decodes to 13 frames of 32x32.
    """
    p = {
        "1": {"class_type": "RhymeFlowDemoModel", "inputs": {}},
        "2": {"class_type": "ModelSamplingSD3", "inputs": {"model": _link("1"), "shift": shift}},
        "3": {"class_type": "RhymeFlowDemoPrompt", "inputs": {"text": prompt}},
        "4": {"class_type": "RhymeFlowDemoPrompt", "inputs": {"text": NEGATIVE}},
        "5": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": width, "height": height, "length": frames, "batch_size": 1}},
        "6": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "7": {"class_type": "BasicScheduler", "inputs": {"model": _link("2"), "scheduler": "simple", "steps": steps, "denoise": 1.0}},
    }
    branches = []
    if dense:
        branches.append(("dense", "8", {
            "8": {"class_type": "CFGGuider", "inputs": {"model": _link("2"), "positive": _link("3"), "negative": _link("4"), "cfg": cfg}},
            "9": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": solver}},
            "10": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": _link("6"), "guider": _link("8"), "sampler": _link("9"),
                                                                     "sigmas": _link("7"), "latent_image": _link("5")}},
        }, "10"))
    if rhymeflow:
        branches.append(("rhymeflow", "12", {
            "12": {"class_type": "RhymeFlowTrajectoryProjection", "inputs": {"model": _link("2"), "context": context, "cache_device": "auto"}},
            "13": {"class_type": "CFGGuider", "inputs": {"model": _link("12"), "positive": _link("3"), "negative": _link("4"), "cfg": cfg}},
            "14": {"class_type": "RhymeFlowKeyframes", "inputs": {"strategy": "semantic", "count": keyframes, "similarity_threshold": 0.98,
                                                                  "min_gap": 1, "manual_frames": ""}},
            # preset custom (the demo's): tools/demo.py sets warmup_steps on this node, which only custom honours.
            "15": {"class_type": "RhymeFlowSampler", "inputs": {"solver": solver, "warmup_steps": warmup, "min_stride": min_stride,
                                                                "max_stride": max_stride, "transition_1": 0.3, "transition_2": 0.7,
                                                                "stride_schedule": "progressive", "preset": preset,
                                                                "keyframes": _link("14")}},
            "16": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": _link("6"), "guider": _link("13"), "sampler": _link("15"),
                                                                     "sigmas": _link("7"), "latent_image": _link("5")}},
        }, "16"))
    for name, first, nodes, sampled in branches:
        p.update(nodes)
        base = int(first) + 10
        p[str(base)] = {"class_type": "RhymeFlowDemoDecode", "inputs": {"samples": _link(sampled), "scale": 4}}
        p[str(base + 1)] = {"class_type": "SaveAnimatedWEBP", "inputs": {"images": _link(str(base)), "filename_prefix": f"rhymeflow_demo/{name}",
                                                                         "fps": 8.0, "lossless": True, "quality": 90, "method": "default"}}
        if save_latents:
            p[str(base + 2)] = {"class_type": "SaveLatent", "inputs": {"samples": _link(sampled), "filename_prefix": name}}
    if dense and rhymeflow and compare:
        p.update(_compare_nodes("30", "18", "22", "dense", "RhymeFlow", "rhymeflow_demo/compare"))
    return p


def _compare_nodes(first: str, reference: str, candidate: str, reference_name: str, candidate_name: str, prefix: str) -> dict:
    """RhymeFlowCompare on two decoded videos (node `first`) and an animated preview of its side-by-side video."""
    return {
        first: {"class_type": "RhymeFlowCompare", "inputs": {"reference": _link(reference), "candidate": _link(candidate),
                                                              "reference_name": reference_name, "candidate_name": candidate_name,
                                                              "difference_gain": 4.0, "reference_seconds": 0.0,
                                                              "candidate_seconds": 0.0}},
        str(int(first) + 1): {"class_type": "SaveAnimatedWEBP", "inputs": {"images": _link(first), "filename_prefix": prefix,
                                                                           "fps": 8.0, "lossless": True, "quality": 90,
                                                                           "method": "default"}},
    }


def compare_prompt(prompt: str = DEMO_PROMPT, seed: int = 42, steps: int = 20, fewer_steps: int = 11, frames: int = 49,
                   size: int = 128, preset: str = "balanced") -> dict:
    """Does RhymeFlow beat simply lowering the steps? Dense (`steps`), RhymeFlow (`steps`, `preset`) and dense with
    `fewer_steps` (the dense steps that take RhymeFlow's time: 11 for the demo model, measured on a 2-core CPU,
    docs/ui.md) on the demo model, same prompt, seed and noise; two RhymeFlowCompare
    nodes score RhymeFlow and fewer steps against dense.

    Node ids: the demo's (dense 8-10 and 18-19, RhymeFlow 12-16 and 22-23, compare 30-31) without latents saved,
    plus fewer steps 40-43 and its compare 32-33.
    """
    p = demo_prompt(prompt, seed, steps, frames, size, size, warmup=max(1, round(steps * 0.2)), preset=preset,
                    save_latents=False)
    p["31"]["inputs"]["filename_prefix"] = "rhymeflow_compare/dense_vs_rhymeflow"
    for nid, name in (("19", "dense"), ("23", "rhymeflow")):
        p[nid]["inputs"]["filename_prefix"] = f"rhymeflow_compare/{name}"
    p.update({
        "40": {"class_type": "BasicScheduler", "inputs": {"model": _link("2"), "scheduler": "simple", "steps": fewer_steps, "denoise": 1.0}},
        "41": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": _link("6"), "guider": _link("8"), "sampler": _link("9"),
                                                                 "sigmas": _link("40"), "latent_image": _link("5")}},
        "42": {"class_type": "RhymeFlowDemoDecode", "inputs": {"samples": _link("41"), "scale": 4}},
        "43": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": _link("42"), "filename_prefix": "rhymeflow_compare/fewer_steps",
                                                            "fps": 8.0, "lossless": True, "quality": 90, "method": "default"}},
    })
    p.update(_compare_nodes("32", "18", "42", "dense", "fewer steps", "rhymeflow_compare/dense_vs_fewer_steps"))
    return p


GROUP_COLORS = {"shared": "#3f789e", "dense": "#8A8", "rhymeflow": "#3d6a80", "fewer": "#b58b2a", "compare": "#a1309b"}
VIDEO_PREVIEW = (300, 460)        # SaveAnimatedWEBP showing one 128x128 demo video
SIDE_BY_SIDE_PREVIEW = (520, 380)  # SaveAnimatedWEBP showing RhymeFlowCompare's three panels


def _present(prompt: dict, *columns: list[str]) -> list[list[str]]:
    """The columns with only the nodes the prompt has (optional ones such as SaveLatent may be absent)."""
    return [kept for kept in ([n for n in c if n in prompt] for c in columns) if kept]


def _demo_titles_and_sizes(prompt: dict) -> tuple[dict, dict]:
    titles = {"2": "Model sampling (shift)", "3": "Prompt", "4": "Negative prompt (empty for the demo model)",
              "5": "Video size and length", "6": "Seed (every sampler)", "7": "Steps (dense and RhymeFlow)",
              "8": "Guider: dense", "9": "Solver: dense", "10": "Sampler: dense", "18": "Decode: dense",
              "19": "Preview: dense", "12": "RhymeFlow patch (keyframe cache)", "13": "Guider: RhymeFlow",
              "16": "Sampler: RhymeFlow", "22": "Decode: RhymeFlow", "23": "Preview: RhymeFlow",
              "20": "Latent: dense", "24": "Latent: RhymeFlow",
              "30": "Compare: RhymeFlow vs dense", "31": "Preview: dense | RhymeFlow | difference x4"}
    sizes = {nid: VIDEO_PREVIEW for nid in ("19", "23")} | {"31": SIDE_BY_SIDE_PREVIEW}
    return {k: v for k, v in titles.items() if k in prompt}, {k: v for k, v in sizes.items() if k in prompt}


def demo_layout(prompt: dict) -> Layout:
    """demo_prompt's nodes in groups: shared inputs | dense above RhymeFlow | compare."""
    titles, sizes = _demo_titles_and_sizes(prompt)
    shared = Group("Model, prompt, video size, seed, steps", _present(prompt, ["1", "2", "5"], ["3", "4", "6", "7"]),
                   GROUP_COLORS["shared"])
    dense = Group("Dense: every frame, every step", _present(prompt, ["8", "9"], ["10", "18", "20"], ["19"]),
                  GROUP_COLORS["dense"])
    ours = Group("RhymeFlow: warm-up, then keyframes every step, the rest once per group",
                 _present(prompt, ["12", "13", "14"], ["15"], ["16", "22", "24"], ["23"]), GROUP_COLORS["rhymeflow"])
    columns: list[list] = [[NoteBox(0, (700, 700)), shared], [g for g in (dense, ours) if g.columns]]
    if "30" in prompt:
        columns.append([Group("Compare: how close is RhymeFlow to dense?", [["30", "31"]], GROUP_COLORS["compare"])])
    return Layout(columns, titles, sizes)


def compare_layout(prompt: dict) -> Layout:
    """compare_prompt's nodes in groups: shared inputs | dense, RhymeFlow, fewer steps | the two comparisons."""
    titles, sizes = _demo_titles_and_sizes(prompt)
    titles.update({"9": "Solver: dense and fewer steps", "8": "Guider: dense and fewer steps",
                   "40": "Steps: fewer (about RhymeFlow's cost)", "41": "Sampler: dense, fewer steps",
                   "42": "Decode: fewer steps", "43": "Preview: fewer steps",
                   "32": "Compare: fewer steps vs dense", "33": "Preview: dense | fewer steps | difference x4"})
    sizes.update({"43": VIDEO_PREVIEW, "33": SIDE_BY_SIDE_PREVIEW})
    shared = Group("Model, prompt, video size, seed, steps", [["1", "2", "5", "9"], ["3", "4", "6", "7", "8"]],
                   GROUP_COLORS["shared"])
    dense = Group("Dense: every frame, every step", [["10", "18"], ["19"]], GROUP_COLORS["dense"])
    ours = Group("RhymeFlow: same steps, about half the model cost",
                 [["12", "13", "14"], ["15"], ["16", "22"], ["23"]], GROUP_COLORS["rhymeflow"])
    fewer = Group("Fewer steps: dense sampling at about RhymeFlow's cost", [["40", "41", "42"], ["43"]],
                  GROUP_COLORS["fewer"])
    compare = Group("Compare both against dense: higher PSNR / SSIM = closer", [["30", "31"], ["32", "33"]],
                    GROUP_COLORS["compare"])
    return Layout([[NoteBox(0, (700, 760)), shared], [dense, ours, fewer], [compare]], titles, sizes)


def two_expert_prompt(prompt: str = "a blue square falls", seed: int = 7, steps: int = 20, switch: int = 10,
                      frames: int = 49, size: int = 128, cfg: float = 4.0) -> dict:
    """Wan 2.2 A14B style: high-noise expert, then low-noise expert on split sigmas, each with RhymeFlow."""
    p = {
        "1": {"class_type": "RhymeFlowDemoModel", "inputs": {}},
        "2": {"class_type": "RhymeFlowDemoModel", "inputs": {}},
        "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": _link("1"), "shift": 3.0}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": _link("2"), "shift": 3.0}},
        "5": {"class_type": "RhymeFlowTrajectoryProjection", "inputs": {"model": _link("3"), "context": "kv_cache", "cache_device": "auto"}},
        "6": {"class_type": "RhymeFlowTrajectoryProjection", "inputs": {"model": _link("4"), "context": "kv_cache", "cache_device": "auto"}},
        "7": {"class_type": "RhymeFlowDemoPrompt", "inputs": {"text": prompt}},
        "8": {"class_type": "RhymeFlowDemoPrompt", "inputs": {"text": NEGATIVE}},
        "9": {"class_type": "CFGGuider", "inputs": {"model": _link("5"), "positive": _link("7"), "negative": _link("8"), "cfg": cfg}},
        "10": {"class_type": "CFGGuider", "inputs": {"model": _link("6"), "positive": _link("7"), "negative": _link("8"), "cfg": cfg}},
        "11": {"class_type": "BasicScheduler", "inputs": {"model": _link("3"), "scheduler": "simple", "steps": steps, "denoise": 1.0}},
        "12": {"class_type": "SplitSigmas", "inputs": {"sigmas": _link("11"), "step": switch}},
        "13": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": size, "height": size, "length": frames, "batch_size": 1}},
        "14": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "15": {"class_type": "DisableNoise", "inputs": {}},
        "16": _expert_sampler(warmup=4, min_stride=2, max_stride=3),
        "17": _expert_sampler(warmup=1, min_stride=3, max_stride=5),
        "18": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": _link("14"), "guider": _link("9"), "sampler": _link("16"),
                                                                 "sigmas": _link("12", 0), "latent_image": _link("13")}},
        "19": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": _link("15"), "guider": _link("10"), "sampler": _link("17"),
                                                                 "sigmas": _link("12", 1), "latent_image": _link("18")}},
        "20": {"class_type": "SaveLatent", "inputs": {"samples": _link("19"), "filename_prefix": "two_expert"}},
    }
    return p


def _expert_sampler(warmup: int, min_stride: int, max_stride: int, solver: str = "euler") -> dict:
    """A Wan 2.2 expert's RhymeFlowSampler. Custom: a preset's warm-up counts the expert's own slice of steps,
    but the high-noise expert wants a longer share (composition) and the low-noise one hardly any."""
    return {"class_type": "RhymeFlowSampler", "inputs": {"solver": solver, "warmup_steps": warmup, "min_stride": min_stride,
                                                         "max_stride": max_stride, "transition_1": 0.3, "transition_2": 0.7,
                                                         "stride_schedule": "progressive", "preset": "custom"}}


# ---- Real Wan models (need the model files; ComfyUI's Wan templates use the same names) --------
WAN_UNET_1_3B = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN22_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
WAN_TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"  # Wan 2.2 A14B uses the Wan 2.1 VAE
WAN_PROMPT = "a red fox trots through fresh snow in a birch forest at sunrise, soft light, camera tracking alongside"
WAN_NEGATIVE = "blurry, low quality, static, distorted, watermark, text"


def _wan_text_and_vae(p: dict, clip: str, vae: str, prompt: str, negative: str, pos: str, neg: str) -> None:
    p[clip] = {"class_type": "CLIPLoader", "inputs": {"clip_name": WAN_TEXT_ENCODER, "type": "wan", "device": "default"}}
    p[vae] = {"class_type": "VAELoader", "inputs": {"vae_name": WAN_VAE}}
    p[pos] = {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": _link(clip)}}
    p[neg] = {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": _link(clip)}}


def _decode_and_save(p: dict, first: int, samples: str, vae: str, prefix: str, fps: float = 16.0) -> None:
    p[str(first)] = {"class_type": "VAEDecode", "inputs": {"samples": _link(samples), "vae": _link(vae)}}
    p[str(first + 1)] = {"class_type": "CreateVideo", "inputs": {"images": _link(str(first)), "fps": fps}}
    p[str(first + 2)] = {"class_type": "SaveVideo", "inputs": {"video": _link(str(first + 1)), "filename_prefix": prefix,
                                                               "format": "auto", "codec": "auto"}}


def wan21_t2v_prompt(prompt: str = WAN_PROMPT, negative: str = WAN_NEGATIVE, seed: int = 42, steps: int = 30, cfg: float = 6.0,
                     shift: float = 8.0, width: int = 832, height: int = 480, frames: int = 81, preset: str = "balanced") -> dict:
    """Wan 2.1 T2V 1.3B at 480p with the all-in-one RhymeFlowKSampler."""
    p = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN_UNET_1_3B, "weight_dtype": "default"}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": _link("1"), "shift": shift}},
        "7": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": width, "height": height, "length": frames, "batch_size": 1}},
        "8": {"class_type": "RhymeFlowKeyframes", "inputs": {"strategy": "semantic", "count": 2, "similarity_threshold": 0.98,
                                                             "min_gap": 1, "manual_frames": ""}},
        "9": {"class_type": "RhymeFlowKSampler", "inputs": {
            "model": _link("4"), "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "uni_pc", "scheduler": "simple",
            "positive": _link("5"), "negative": _link("6"), "latent_image": _link("7"), "denoise": 1.0,
            "context": "kv_cache", "cache_device": "auto", "warmup_steps": 6, "min_stride": 3, "max_stride": 5,
            "transition_1": 0.3, "transition_2": 0.7, "stride_schedule": "progressive", "preset": preset, "keyframes": _link("8")}},
    }
    _wan_text_and_vae(p, "2", "3", prompt, negative, "5", "6")
    _decode_and_save(p, 10, "9", "3", "video/rhymeflow_wan21_t2v")
    return p


def wan22_a14b_t2v_prompt(prompt: str = WAN_PROMPT, negative: str = WAN_NEGATIVE, seed: int = 42, steps: int = 20, switch: int = 10,
                          cfg: float = 3.5, shift: float = 8.0, width: int = 832, height: int = 480, frames: int = 81) -> dict:
    """Wan 2.2 A14B T2V: high-noise expert for the first `switch` steps, low-noise expert for the rest, each with RhymeFlow."""
    p = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN22_HIGH, "weight_dtype": "default"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN22_LOW, "weight_dtype": "default"}},
        "5": {"class_type": "ModelSamplingSD3", "inputs": {"model": _link("1"), "shift": shift}},
        "6": {"class_type": "ModelSamplingSD3", "inputs": {"model": _link("2"), "shift": shift}},
        "7": {"class_type": "RhymeFlowTrajectoryProjection", "inputs": {"model": _link("5"), "context": "kv_cache", "cache_device": "auto"}},
        "8": {"class_type": "RhymeFlowTrajectoryProjection", "inputs": {"model": _link("6"), "context": "kv_cache", "cache_device": "auto"}},
        "11": {"class_type": "CFGGuider", "inputs": {"model": _link("7"), "positive": _link("9"), "negative": _link("10"), "cfg": cfg}},
        "12": {"class_type": "CFGGuider", "inputs": {"model": _link("8"), "positive": _link("9"), "negative": _link("10"), "cfg": cfg}},
        "13": {"class_type": "BasicScheduler", "inputs": {"model": _link("5"), "scheduler": "simple", "steps": steps, "denoise": 1.0}},
        "14": {"class_type": "SplitSigmas", "inputs": {"sigmas": _link("13"), "step": switch}},
        "15": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": width, "height": height, "length": frames, "batch_size": 1}},
        "16": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "17": {"class_type": "DisableNoise", "inputs": {}},
        "18": _expert_sampler(warmup=4, min_stride=2, max_stride=3),
        "19": _expert_sampler(warmup=1, min_stride=3, max_stride=5),
        "20": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": _link("16"), "guider": _link("11"), "sampler": _link("18"),
                                                                 "sigmas": _link("14", 0), "latent_image": _link("15")}},
        "21": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": _link("17"), "guider": _link("12"), "sampler": _link("19"),
                                                                 "sigmas": _link("14", 1), "latent_image": _link("20")}},
    }
    _wan_text_and_vae(p, "3", "4", prompt, negative, "9", "10")
    _decode_and_save(p, 22, "21", "4", "video/rhymeflow_wan22_a14b_t2v")
    return p


# ---- Image-to-video (Wan 2.1 I2V / FLF2V, Wan 2.2 A14B I2V, Wan 2.2 TI2V-5B) -------------------
WAN21_I2V = "wan2.1_i2v_480p_14B_fp16.safetensors"
WAN21_FLF2V = "wan2.1_flf2v_720p_14B_fp16.safetensors"
WAN22_I2V_HIGH = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_I2V_LOW = "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
WAN22_TI2V = "wan2.2_ti2v_5B_fp16.safetensors"
WAN22_VAE = "wan2.2_vae.safetensors"
CLIP_VISION_H = "clip_vision_h.safetensors"
I2V_PROMPT = "the fox turns its head and trots away through the snow, camera slowly following"


def _load_image(p: dict, nid: str, image: str = "example.png") -> None:
    p[nid] = {"class_type": "LoadImage", "inputs": {"image": image}}


def _clip_vision(p: dict, loader: str, encode: str, image: str) -> None:
    p.setdefault(loader, {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION_H}})
    p[encode] = {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": _link(loader), "image": _link(image), "crop": "none"}}


def wan21_i2v_prompt(first_last: bool = False, prompt: str = I2V_PROMPT, negative: str = WAN_NEGATIVE, seed: int = 42,
                     steps: int = 30, cfg: float = 6.0, width: int = 832, height: int = 480, frames: int = 81) -> dict:
    """Wan 2.1 I2V 14B (or FLF2V 14B with first_last) with RhymeFlowKSampler: the Wan 2.1 T2V layout with
    the empty latent replaced by WanImageToVideo / WanFirstLastFrameToVideo and CLIP-vision image tokens."""
    p = wan21_t2v_prompt(prompt, negative, seed, steps, cfg, 8.0, width, height, frames, "balanced")
    p["1"]["inputs"]["unet_name"] = WAN21_FLF2V if first_last else WAN21_I2V
    _load_image(p, "13")
    _clip_vision(p, "14", "15", "13")
    size = {"positive": _link("5"), "negative": _link("6"), "vae": _link("3"), "width": width, "height": height,
            "length": frames, "batch_size": 1}
    if first_last:
        _load_image(p, "16")
        _clip_vision(p, "14", "17", "16")
        p["7"] = {"class_type": "WanFirstLastFrameToVideo", "inputs": {
            **size, "clip_vision_start_image": _link("15"), "clip_vision_end_image": _link("17"),
            "start_image": _link("13"), "end_image": _link("16")}}
    else:
        p["7"] = {"class_type": "WanImageToVideo", "inputs": {**size, "clip_vision_output": _link("15"), "start_image": _link("13")}}
    p["9"]["inputs"].update(positive=_link("7", 0), negative=_link("7", 1), latent_image=_link("7", 2))
    p["12"]["inputs"]["filename_prefix"] = "video/rhymeflow_wan21_flf2v" if first_last else "video/rhymeflow_wan21_i2v"
    return p


def wan22_a14b_i2v_prompt(prompt: str = I2V_PROMPT, negative: str = WAN_NEGATIVE, seed: int = 42, steps: int = 20,
                          switch: int = 10, cfg: float = 3.5, width: int = 832, height: int = 480, frames: int = 81) -> dict:
    """Wan 2.2 A14B I2V: the A14B T2V two-expert layout with WanImageToVideo (no CLIP vision: 2.2 has no img_emb)."""
    p = wan22_a14b_t2v_prompt(prompt, negative, seed, steps, switch, cfg, 8.0, width, height, frames)
    p["1"]["inputs"]["unet_name"], p["2"]["inputs"]["unet_name"] = WAN22_I2V_HIGH, WAN22_I2V_LOW
    del p["15"]
    _load_image(p, "25")
    p["26"] = {"class_type": "WanImageToVideo", "inputs": {
        "positive": _link("9"), "negative": _link("10"), "vae": _link("4"), "width": width, "height": height,
        "length": frames, "batch_size": 1, "start_image": _link("25")}}
    for guider in ("11", "12"):
        p[guider]["inputs"].update(positive=_link("26", 0), negative=_link("26", 1))
    p["20"]["inputs"]["latent_image"] = _link("26", 2)
    p["24"]["inputs"]["filename_prefix"] = "video/rhymeflow_wan22_a14b_i2v"
    return p


def wan22_ti2v_5b_prompt(prompt: str = I2V_PROMPT, negative: str = WAN_NEGATIVE, seed: int = 42, steps: int = 30,
                         cfg: float = 5.0, width: int = 1280, height: int = 704, frames: int = 121) -> dict:
    """Wan 2.2 TI2V-5B image-to-video (48-channel latent, Wan 2.2 VAE): Wan22ImageToVideoLatent keeps the
    start image as a clean first frame (per-frame timesteps); without start_image it is text-to-video."""
    p = wan21_t2v_prompt(prompt, negative, seed, steps, cfg, 8.0, width, height, frames, "balanced")
    p["1"]["inputs"]["unet_name"] = WAN22_TI2V
    p["3"]["inputs"]["vae_name"] = WAN22_VAE
    _load_image(p, "13")
    p["7"] = {"class_type": "Wan22ImageToVideoLatent", "inputs": {"vae": _link("3"), "width": width, "height": height,
                                                                  "length": frames, "batch_size": 1, "start_image": _link("13")}}
    p["12"]["inputs"].update(filename_prefix="video/rhymeflow_wan22_ti2v_5b")
    p["11"]["inputs"]["fps"] = 24.0
    return p


# ---- UI format ---------------------------------------------------------------------------------
def _input_specs(class_type: str) -> list[tuple[str, str, dict]]:
    """(name, type, options) of a node's inputs in declaration order, from the running host."""
    import nodes
    cls = nodes.NODE_CLASS_MAPPINGS[class_type]
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind = value[0]
            opts = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            out.append((name, "COMBO" if isinstance(kind, list) or kind == "COMBO" else kind, opts))
    return out


def _output_types(class_type: str) -> list[str]:
    import nodes
    return list(nodes.NODE_CLASS_MAPPINGS[class_type].RETURN_TYPES)


DEFAULT_SIZE = (420, 200)
# Nodes with the schedule view (web/js/rhymeflow.js) need room for its drawing below the widgets;
# RhymeFlowCompare for its report text (web/js/rhymeflow_compare.js).
NODE_SIZES = {"RhymeFlowSampler": (440, 520), "RhymeFlowKSampler": (440, 760), "CLIPTextEncode": (420, 160),
              "RhymeFlowCompare": (420, 400)}


def _ui_inputs(prompt: dict, nid: str, links: list, out_links: dict) -> tuple[list, list]:
    """(UI inputs, widget values) of API node `nid`; appends its incoming links to `links` and `out_links`."""
    node = prompt[nid]
    inputs, widgets = [], []
    for name, kind, opts in _input_specs(node["class_type"]):
        if name not in node["inputs"]:
            continue
        value = node["inputs"][name]
        if isinstance(value, list):
            link_id = len(links) + 1
            src, slot = value
            links.append([link_id, int(src), slot, int(nid), len(inputs), _output_types(prompt[src]["class_type"])[slot]])
            out_links.setdefault((src, slot), []).append(link_id)
            entry = {"name": name, "type": kind, "link": link_id}
            if kind in WIDGET_TYPES:
                entry["widget"] = {"name": name}
            inputs.append(entry)
        else:
            widgets.append(value)
            if opts.get("control_after_generate"):
                widgets.append("fixed")
            inputs.append({"name": name, "type": kind, "widget": {"name": name}, "link": None})
    return inputs, widgets


# ---- Laid-out workflows: groups of nodes in columns ----------------------------------------------
@dataclass
class Group:
    """A titled box of nodes: `columns` of node ids, each column top to bottom."""
    title: str
    columns: list[list[str]]
    color: str = "#3f789e"


@dataclass
class NoteBox:
    """Where the workflow's note number `index` goes (a column item like a group)."""
    index: int = 0
    size: tuple[int, int] = (520, 640)


@dataclass
class Layout:
    """Columns of groups and notes, left to right; items in a column top to bottom. Every node of the
    prompt must be in a group. `titles` and `sizes` override a node's title and size by node id."""
    columns: list[list[Group | NoteBox]]
    titles: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


GROUP_PAD, GROUP_HEADER, NODE_TITLE, NODE_GAP, COLUMN_GAP, GROUP_GAP = 20, 44, 30, 24, 30, 50
NODE_WIDTH = 320


def _auto_size(node: dict) -> tuple[int, int]:
    """A node's size from its sockets and widgets (litegraph: 20 px per slot row, about 24 per widget)."""
    if node["class_type"] in NODE_SIZES:
        return NODE_SIZES[node["class_type"]]
    sockets = widgets = extra = 0
    for name, kind, opts in _input_specs(node["class_type"]):
        if name not in node["inputs"]:
            continue
        if kind not in WIDGET_TYPES:
            sockets += 1
            continue
        widgets += 2 if opts.get("control_after_generate") else 1
        extra += 60 if opts.get("multiline") else 0
    rows = max(sockets, len(_output_types(node["class_type"])))
    return NODE_WIDTH, max(60, rows * 22 + widgets * 26 + extra + 16)


def _place(prompt: dict, layout: Layout, origin: tuple[int, int] = (0, 0)):
    """({node id: (pos, size)}, [group dicts], [note (pos, size)]) for a layout."""
    placed: dict[str, tuple[list, list]] = {}
    groups, notes = [], {}
    x = origin[0]
    for column in layout.columns:
        y, column_width = origin[1], 0
        for item in column:
            if isinstance(item, NoteBox):
                notes[item.index] = ([x, y], list(item.size))
                y += item.size[1] + GROUP_GAP
                column_width = max(column_width, item.size[0])
                continue
            nx, group_height = x + GROUP_PAD, 0
            for ids in item.columns:
                ny, width = y + GROUP_HEADER + NODE_TITLE, 0
                for nid in ids:
                    size = layout.sizes.get(nid) or _auto_size(prompt[nid])
                    placed[nid] = ([nx, ny], list(size))
                    ny += size[1] + NODE_TITLE + NODE_GAP
                    width = max(width, size[0])
                group_height = max(group_height, ny - NODE_TITLE - NODE_GAP - y)
                nx += width + COLUMN_GAP
            box = [x, y, nx - COLUMN_GAP + GROUP_PAD - x, group_height + GROUP_PAD]
            groups.append({"id": len(groups) + 1, "title": item.title, "bounding": box, "color": item.color,
                           "font_size": 24, "flags": {}})
            y += box[3] + GROUP_GAP
            column_width = max(column_width, box[2])
        x += column_width + GROUP_GAP
    missing = set(prompt) - set(placed)
    if missing:
        raise ValueError(f"layout places no group around nodes {sorted(missing, key=int)}")
    return placed, groups, notes


def api_to_ui(prompt: dict, notes: list[str] = (), layout: Layout | None = None) -> dict:
    """A UI-format workflow (litegraph JSON, version 0.4): laid out in `layout`'s groups, or else left to
    right by dependency depth."""
    depth: dict[str, int] = {}

    def node_depth(nid):
        if nid not in depth:
            ups = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((node_depth(u) for u in ups), default=-1)
        return depth[nid]

    placed, groups, note_boxes = _place(prompt, layout) if layout is not None else ({}, [], {})
    ids = sorted(prompt, key=int)
    numeric = {nid: int(nid) for nid in ids}
    column_y: dict[int, int] = {}  # next free y per column
    links, ui_nodes = [], []
    out_links: dict[tuple, list] = {}
    for nid in ids:
        node = prompt[nid]
        inputs, widgets = _ui_inputs(prompt, nid, links, out_links)
        col = node_depth(nid)
        if nid in placed:
            pos, size = placed[nid]
        else:
            size = NODE_SIZES.get(node["class_type"], DEFAULT_SIZE)
            y = column_y.get(col, 40)
            column_y[col] = y + size[1] + 60
            pos = [40 + 480 * col, y]
        ui_node = {
            "id": numeric[nid], "type": node["class_type"], "pos": pos, "size": list(size),
            "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
        }
        if layout is not None and nid in layout.titles:
            ui_node["title"] = layout.titles[nid]
        ui_nodes.append(ui_node)
    for ui_node in ui_nodes:
        nid = str(ui_node["id"])
        ui_node["outputs"] = [{"name": t, "type": t, "links": out_links.get((nid, slot), [])}
                              for slot, t in enumerate(_output_types(prompt[nid]["class_type"]))]
    order = sorted(ui_nodes, key=lambda n: depth[str(n["id"])])
    for k, n in enumerate(order):
        n["order"] = k
    next_id = max(numeric.values()) + 1
    notes_y = max(column_y.values(), default=40)
    for k, text in enumerate(notes):
        pos, size = note_boxes.get(k, ([40, notes_y + 300 * k], [900, 260]))
        ui_nodes.append({"id": next_id + k, "type": "MarkdownNote", "pos": pos, "size": size,
                         "flags": {}, "order": len(ui_nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                         "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": groups, "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def ui_to_api(workflow: dict) -> dict:
    """Convert a UI-format workflow back to an API prompt, checking every node, input and link on the way."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        if node.get("mode", 0) != 0:
            continue
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": _api_inputs(node, links)}
    return prompt


def _api_inputs(node: dict, links: dict) -> dict:
    """The API inputs of a UI node: links as [source id, slot], widget values in the host's input order."""
    specs = _input_specs(node["type"])  # KeyError if the host lacks the node type
    names = {s[0] for s in specs}
    for entry in node.get("inputs", []):
        if entry["name"] not in names:
            raise ValueError(f"node {node['id']} ({node['type']}): input {entry['name']!r} does not exist in this host")
    values = list(node.get("widgets_values", []))
    linked = {e["name"]: e["link"] for e in node.get("inputs", []) if e.get("link") is not None}
    inputs = {}
    for name, kind, opts in specs:
        if name in linked:
            link = links[linked[name]]
            if link[3] != node["id"]:
                raise ValueError(f"link {link[0]} does not end at node {node['id']}")
            inputs[name] = [str(link[1]), link[2]]
        elif kind in WIDGET_TYPES and values:
            inputs[name] = values.pop(0)
            if opts.get("control_after_generate") and values:
                values.pop(0)
    return inputs
