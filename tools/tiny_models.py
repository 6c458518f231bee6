"""Random-weight models of ComfyUI's real video DiT classes, for the tests and the benchmarks.

One builder per family instantiates the host's own class (WanModel, HunyuanVideo, LTXVModel) at
the sizes asked for; `random_state_dict` fills it with random weights by one scheme, and `load`
loads those through `comfy.sd.load_diffusion_model_state_dict`, so ComfyUI's own detection picks
the model_base class (WAN21, WAN22, HunyuanVideo, HunyuanVideo15, LTXV) exactly as for a real
checkpoint. Nothing is downloaded. The same code makes a 2-block test model and a 14B benchmark
model (built on the meta device, weights drawn directly on the target device in the target dtype).

The scheme: weights of linear and convolution layers N(0, 1/fan_in) (activations keep their
scale at any width and depth), norm scales 1 + N(0, 0.05²), every other parameter (biases, norm
shifts, modulation tables, embeddings) N(0, 0.05²). Nothing is exactly zero or one, so a pass
that drops a bias or a norm's affine cannot agree with the stock forward by accident.

Detection fixes some sizes: Wan has heads of 128 (heads = dim // 128); HunyuanVideo has head_dim
128 (hidden = 128 x heads, RoPE axes 16/56/56); LTXV has 32 heads and cross_attention_dim = inner_dim.
"""
from __future__ import annotations

import dataclasses

import torch

WAN_TEXT_DIM = 4096       # UMT5-XXL, the width of Wan's text projection input
WAN_CLIP_DIM = 1280       # CLIP-vision width that Wan's img_emb projects (fixed by the architecture)
HUNYUAN_TEXT_DIM = 64     # the real text encoders give 4096 (1.0) / 3584 (1.5); any width loads
HUNYUAN_POOLED_DIM = 768  # fixed by ComfyUI's detection (CLIP-L pooled output)
HUNYUAN15_VISION_DIM = 1152  # detection of HunyuanVideo15 keys on this width
LTXV_CAPTION_DIM = 4096   # LTXVModel's default caption_channels (T5-XXL)
LTXV_CHANNELS = 128
SMALL = 0.05              # the spread of every parameter that is not a layer's weight matrix

WAN_VARIANTS = {
    # variant: WanModel arguments that make ComfyUI detect it as the real checkpoint family would be
    "t2v": dict(model_type="t2v", in_dim=16, out_dim=16),                    # Wan 2.1 T2V, Wan 2.2 A14B T2V
    "i2v": dict(model_type="i2v", in_dim=36, out_dim=16),                    # Wan 2.1 I2V 14B (CLIP-vision img_emb)
    "flf2v": dict(model_type="i2v", in_dim=36, out_dim=16, flf_pos_embed_token_number=514),  # Wan 2.1 FLF2V
    "a14b_i2v": dict(model_type="t2v", in_dim=36, out_dim=16),               # Wan 2.2 A14B I2V experts (no img_emb)
    "ti2v_5b": dict(model_type="t2v", in_dim=48, out_dim=48),                # Wan 2.2 TI2V-5B (WAN22, 48 channels)
    "vace": dict(model_type="vace", in_dim=16, out_dim=16, vace_layers=1, vace_in_dim=96),  # Wan VACE (VaceWanModel)
}
HUNYUAN_VARIANTS = ("1.0", "1.5")
LTXV_VARIANTS = ("t2v",)


def _operations(operations):
    import comfy.ops
    return operations or comfy.ops.disable_weight_init


# --- one builder per family: the host's module at a small size (no weights drawn) ------------------

def wan_module(variant: str = "t2v", dim: int = 128, ffn_dim: int = 256, layers: int = 2, operations=None, **overrides):
    """ComfyUI's WanModel (VaceWanModel for "vace") as `variant` (WAN_VARIANTS); `overrides` replace its arguments (e.g. in_dim)."""
    from comfy.ldm.wan.model import VaceWanModel, WanModel

    args = dict(WAN_VARIANTS[variant], patch_size=(1, 2, 2), dim=dim, ffn_dim=ffn_dim, freq_dim=256, text_dim=WAN_TEXT_DIM,
                num_heads=max(1, dim // 128), num_layers=layers)
    cls = VaceWanModel if variant == "vace" else WanModel
    return cls(operations=_operations(operations), **{**args, **overrides})


def hunyuan_config(variant: str = "1.0", heads: int = 1, depth: int = 1, single: int = 1, byt5: bool = False) -> dict:
    v15 = variant == "1.5"
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


def hunyuan_module(variant: str = "1.0", operations=None, **sizes):
    """HunyuanVideo 1.0 (16 ch, patch 1x2x2, pooled CLIP, embedded guidance) or 1.5 (32 ch + 33 concat
    channels, patch 1x1x1, vision tokens); byt5=True adds the ByT5 glyph-text mapper (1472-wide inputs)."""
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    if variant not in HUNYUAN_VARIANTS:
        raise KeyError(variant)
    return HunyuanVideo(operations=_operations(operations), **hunyuan_config(variant, **sizes))


def ltxv_module(variant: str = "t2v", head_dim: int = 4, layers: int = 2, operations=None):
    """ComfyUI's LTXVModel (128 latent channels, patch 1x1x1, 32 heads of `head_dim`)."""
    from comfy.ldm.lightricks.model import LTXVModel

    if variant not in LTXV_VARIANTS:
        raise KeyError(variant)
    inner = 32 * head_dim
    return LTXVModel(in_channels=LTXV_CHANNELS, cross_attention_dim=inner, attention_head_dim=head_dim, num_attention_heads=32,
                     caption_channels=LTXV_CAPTION_DIM, num_layers=layers, operations=_operations(operations))


BUILDERS = {"wan": wan_module, "hunyuan": hunyuan_module, "ltxv": ltxv_module}
VARIANTS = {"wan": tuple(WAN_VARIANTS), "hunyuan": HUNYUAN_VARIANTS, "ltxv": LTXV_VARIANTS}


def variant_of(family: str, variant: str | None = None) -> str:
    """The variant asked for, or the family's first (wan: t2v, hunyuan: 1.0, ltxv: t2v)."""
    if family not in BUILDERS:
        raise ValueError(f"unknown model family {family!r}; use one of {', '.join(BUILDERS)}")
    variant = variant or VARIANTS[family][0]
    if variant not in VARIANTS[family]:
        raise ValueError(f"unknown {family} variant {variant!r}; use one of {', '.join(VARIANTS[family])}")
    return variant


def build_module(family: str, variant: str | None = None, operations=None, **sizes) -> torch.nn.Module:
    """The family's diffusion module, uninitialised (ComfyUI's no-init ops) unless `operations` say otherwise."""
    return BUILDERS[family](variant_of(family, variant), operations=operations, **sizes)


# --- one initialisation scheme ----------------------------------------------------------------------

def _kinds(module: torch.nn.Module) -> dict[str, str]:
    """'matrix', 'norm' or 'other' for every parameter name of `module`."""
    kinds = {}
    for prefix, m in module.named_modules():
        layer = isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
        norm = type(m).__name__.endswith("Norm")
        for name, p in m.named_parameters(prefix=prefix, recurse=False):
            short = name.rsplit(".", 1)[-1]
            if layer and short == "weight" and p.ndim >= 2:
                kinds[name] = "matrix"
            elif norm and short in ("weight", "scale"):
                kinds[name] = "norm"
            else:
                kinds[name] = "other"
    return kinds


def random_state_dict(family: str, variant: str | None = None, seed: int = 0, dtype=torch.float32, device="cpu",
                      **sizes) -> dict:
    """Random weights for `build_module(family, variant, **sizes)`, drawn on `device` in `dtype` (the scheme above)."""
    with torch.device("meta"):
        module = build_module(family, variant, **sizes)
    kinds = _kinds(module)
    gen = torch.Generator(device).manual_seed(seed)
    sd = {}
    for name, meta in module.state_dict().items():
        if name not in kinds:
            raise ValueError(f"{family} state dict entry {name!r} is not a parameter; the tiny-model scheme does not fill buffers")
        t = torch.empty(meta.shape, dtype=dtype, device=device)
        if kinds[name] == "matrix":
            t.normal_(0.0, meta.shape[1:].numel() ** -0.5, generator=gen)
        else:
            t.normal_(1.0 if kinds[name] == "norm" else 0.0, SMALL, generator=gen)
        sd[name] = t
    return sd


def load(family: str, variant: str | None = None, seed: int = 0, dtype=None, device="cpu", **sizes):
    """A real ComfyUI MODEL (ModelPatcher) from `random_state_dict`; `dtype` also sets the model's weight dtype."""
    import comfy.sd

    sd = random_state_dict(family, variant, seed, dtype or torch.float32, device, **sizes)
    return comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype} if dtype is not None else {})
