"""Tiny random-weight models of ComfyUI's real HunyuanVideo and LTX-Video classes (tests, benchmarks).

Each builder instantiates the host class at a small size, draws random weights and loads the
state dict through `comfy.sd.load_diffusion_model_state_dict`, so ComfyUI's own detection
picks the model_base class (HunyuanVideo, HunyuanVideo15, LTXV) exactly as for a real file.
Detection fixes some sizes: HunyuanVideo has head_dim 128 (hidden = 128·heads, RoPE axes
16/56/56); LTXV has 32 heads and cross_attention_dim = inner_dim.
"""
from __future__ import annotations

import dataclasses

import torch

HUNYUAN_TEXT_DIM = 64     # the real text encoders give 4096 (1.0) / 3584 (1.5); any width loads
HUNYUAN_POOLED_DIM = 768  # fixed by ComfyUI's detection (CLIP-L pooled output)
HUNYUAN15_VISION_DIM = 1152  # detection of HunyuanVideo15 keys on this width
LTXV_CAPTION_DIM = 4096   # LTXVModel's default caption_channels (T5-XXL)
LTXV_CHANNELS = 128


def _random_state_dict(module: torch.nn.Module, seed: int, scale: float) -> dict:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in module.state_dict().items():
        # Norm weights near one keep activations in range through the random blocks.
        base = 1.0 if ("norm" in name or name.endswith(".scale")) and name.endswith((".weight", ".scale")) else 0.0
        sd[name] = base + scale * torch.randn(p.shape, generator=gen)
    return sd


def _load(sd: dict):
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict(sd)


# --- HunyuanVideo ---------------------------------------------------------------------------------

def hunyuan_config(version: str = "1.0", heads: int = 1, depth: int = 1, single: int = 1) -> dict:
    v15 = version == "1.5"
    config = dict(
        in_channels=65 if v15 else 16, out_channels=32 if v15 else 16,
        vec_in_dim=None if v15 else HUNYUAN_POOLED_DIM, context_in_dim=HUNYUAN_TEXT_DIM,
        hidden_size=128 * heads, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
        axes_dim=[16, 56, 56], theta=256, patch_size=[1, 1, 1] if v15 else [1, 2, 2], qkv_bias=True,
        guidance_embed=not v15, byt5=False, meanflow=False, use_cond_type_embedding=v15,
        vision_in_dim=HUNYUAN15_VISION_DIM if v15 else None)
    from comfy.ldm.hunyuan_video.model import HunyuanVideoParams
    fields = {f.name for f in dataclasses.fields(HunyuanVideoParams)}
    if "meanflow_sum" in fields:  # newer ComfyUI
        config["meanflow_sum"] = False
    return {k: v for k, v in config.items() if k in fields}


def tiny_hunyuan_state_dict(version: str = "1.0", seed: int = 0, scale: float = 0.05, **sizes) -> dict:
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    model = HunyuanVideo(operations=comfy.ops.disable_weight_init, **hunyuan_config(version, **sizes))
    return _random_state_dict(model, seed, scale)


def load_tiny_hunyuan(version: str = "1.0", seed: int = 0, **sizes):
    """A real ComfyUI MODEL: HunyuanVideo (1.0: 16 ch, patch 1x2x2, pooled CLIP, embedded guidance)
    or HunyuanVideo15 (1.5: 32 ch + 33 concat channels, patch 1x1x1, vision tokens)."""
    return _load(tiny_hunyuan_state_dict(version, seed, **sizes))


# --- LTX-Video ------------------------------------------------------------------------------------

def tiny_ltxv_state_dict(seed: int = 0, head_dim: int = 4, layers: int = 2, scale: float = 0.05) -> dict:
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    inner = 32 * head_dim
    model = LTXVModel(in_channels=LTXV_CHANNELS, cross_attention_dim=inner, attention_head_dim=head_dim,
                      num_attention_heads=32, caption_channels=LTXV_CAPTION_DIM, num_layers=layers,
                      operations=comfy.ops.disable_weight_init)
    return _random_state_dict(model, seed, scale)


def load_tiny_ltxv(seed: int = 0, **sizes):
    """A real ComfyUI MODEL around model_base.LTXV (128 latent channels, patch 1x1x1)."""
    return _load(tiny_ltxv_state_dict(seed, **sizes))
