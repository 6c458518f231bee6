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

def hunyuan_config(version: str = "1.0", heads: int = 1, depth: int = 1, single: int = 1, byt5: bool = False) -> dict:
    v15 = version == "1.5"
    config = dict(
        in_channels=65 if v15 else 16, out_channels=32 if v15 else 16,
        vec_in_dim=None if v15 else HUNYUAN_POOLED_DIM, context_in_dim=HUNYUAN_TEXT_DIM,
        hidden_size=128 * heads, mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single,
        axes_dim=[16, 56, 56], theta=256, patch_size=[1, 1, 1] if v15 else [1, 2, 2], qkv_bias=True,
        guidance_embed=not v15, byt5=byt5, meanflow=False, use_cond_type_embedding=v15,
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
    or HunyuanVideo15 (1.5: 32 ch + 33 concat channels, patch 1x1x1, vision tokens; byt5=True adds
    the ByT5 glyph-text mapper, whose 1472-wide inputs are fixed by the architecture)."""
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


# --- Wan variants ---------------------------------------------------------------------------------

WAN_CLIP_DIM = 1280  # CLIP-vision width that Wan's img_emb projects (fixed by the architecture)
WAN_VARIANTS = {
    # variant: WanModel arguments that make ComfyUI detect it as the real checkpoint family would be
    "t2v": dict(model_type="t2v", in_dim=16, out_dim=16),                    # Wan 2.1 T2V, Wan 2.2 A14B T2V
    "i2v": dict(model_type="i2v", in_dim=36, out_dim=16),                    # Wan 2.1 I2V 14B (CLIP-vision img_emb)
    "flf2v": dict(model_type="i2v", in_dim=36, out_dim=16, flf_pos_embed_token_number=514),  # Wan 2.1 FLF2V
    "a14b_i2v": dict(model_type="t2v", in_dim=36, out_dim=16),               # Wan 2.2 A14B I2V experts (no img_emb)
    "ti2v_5b": dict(model_type="t2v", in_dim=48, out_dim=48),                # Wan 2.2 TI2V-5B (WAN22, 48 channels)
}


def tiny_wan_variant_state_dict(variant: str, seed: int = 0, dim: int = 128, ffn_dim: int = 256, layers: int = 2,
                                scale: float = 0.05) -> dict:
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    model = WanModel(patch_size=(1, 2, 2), dim=dim, ffn_dim=ffn_dim, text_dim=4096, num_heads=max(1, dim // 128),
                     num_layers=layers, operations=comfy.ops.disable_weight_init, **WAN_VARIANTS[variant])
    sd = _random_state_dict(model, seed, scale)
    for key in ("img_emb.proj.0.weight", "img_emb.proj.4.weight"):  # LayerNorms: near one, so image tokens count
        if key in sd:
            sd[key] = sd[key] + 1.0
    return sd


def load_tiny_wan_variant(variant: str, seed: int = 0, **sizes):
    """A real ComfyUI MODEL of a Wan family member (WAN21 with or without image_to_video, or WAN22)."""
    return _load(tiny_wan_variant_state_dict(variant, seed, **sizes))
