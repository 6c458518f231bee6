"""The embedded demo: a tiny WanModel built through ComfyUI's loader, and a prompt encoder.

No real Wan weights can be downloaded in CI, so the demo and tests use ComfyUI's real WanModel
class at a tiny size. Weights are random but deterministic (seeded); a trained model replaces
them later without changing this interface.
"""
from __future__ import annotations

import hashlib

import torch

TEXT_DIM = 4096  # the width of Wan's text projection input (UMT5-XXL)
DEMO_CONFIG = {"dim": 128, "ffn_dim": 256, "layers": 2}


def tiny_wan_state_dict(seed: int = 0, dim: int = 128, ffn_dim: int = 256, layers: int = 2,
                        in_dim: int = 16, freq_dim: int = 256, scale: float = 0.05) -> dict:
    """A WanModel state dict with random weights; ComfyUI detects the config from the keys."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    model = WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=in_dim, dim=dim, ffn_dim=ffn_dim,
                     freq_dim=freq_dim, text_dim=TEXT_DIM, out_dim=16, num_heads=dim // 128,
                     num_layers=layers, operations=comfy.ops.disable_weight_init)
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.state_dict().items():
        base = 1.0 if name.endswith(".weight") and "norm" in name else 0.0
        sd[name] = base + scale * torch.randn(p.shape, generator=gen)
    return sd


def load_tiny_wan(seed: int = 0, **config):
    """A real ComfyUI MODEL (ModelPatcher around WAN21) from a tiny random state dict."""
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict(tiny_wan_state_dict(seed, **config))


def encode_prompt(text: str, min_tokens: int = 8) -> torch.Tensor:
    """Deterministic token embeddings [1, L, 4096]: one seeded vector per word, position-mixed."""
    words = text.lower().replace(";", " ; ").replace(",", " , ").split() or [""]
    rows = []
    for pos, word in enumerate(words):
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        vec = torch.randn(TEXT_DIM, generator=torch.Generator().manual_seed(seed))
        rows.append(vec * (1.0 + 0.05 * pos))
    while len(rows) < min_tokens:
        rows.append(torch.zeros(TEXT_DIM))
    return torch.stack(rows)[None] / TEXT_DIM ** 0.5
