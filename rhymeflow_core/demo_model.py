"""The embedded demo: a small trained WanModel, its prompt encoder and its latent space.

No real Wan weights can be downloaded in CI, so the pack ships a small model of ComfyUI's own
`WanModel` class trained on procedurally generated clips (tools/train_demo_model.py). It loads
through `comfy.sd.load_diffusion_model_state_dict` like any Wan checkpoint and runs through the
same patched forward.

Latent space (exact, no VAE): one latent frame is one video frame, one latent pixel is a 2x2 RGB
block. The block's 12 values (RGB in [-1, 1], ordered channel-major: r00 r01 r10 r11 g.. b..) are
multiplied by the first 12 columns of the 16x16 Sylvester-Hadamard matrix divided by 4, whose
columns are orthonormal; that is the model's working space (`encode_pixels`, what it was trained
on). A ComfyUI LATENT holds it in Wan 2.1's latent format (ComfyUI applies `process_in` before the
model and `process_out` after), so `decode_latent` applies `process_in` and then the transpose.
A latent of W x H latent pixels is a 2W x 2H video; `decode_latent(encode_latent(x)) == x` up to rounding.
"""
from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import torch

from .demo_prompt import prompt_tokens
from .errors import RhymeFlowInputError

TEXT_DIM = 4096  # the width of Wan's text projection input (UMT5-XXL)
TEXT_TOKENS = 32  # prompts are padded (with zero rows) or cut to this many tokens
LATENT_CHANNELS = 16
BLOCK = 2  # pixels per latent pixel, each way
WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "rhymeflow_demo_wan.safetensors"
# Architecture of the shipped weights (ComfyUI detects it from the keys; listed for the trainer).
DEMO_CONFIG = {"dim": 256, "ffn_dim": 768, "layers": 4}


# --- latent space -------------------------------------------------------------------------------

@cache
def _basis() -> torch.Tensor:
    """16x12, orthonormal columns: the first 12 columns of H16 / 4 (Sylvester construction)."""
    h = torch.ones(1, 1)
    while h.shape[0] < LATENT_CHANNELS:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h[:, : 3 * BLOCK * BLOCK] / 4.0


def _wan21_format():
    import comfy.latent_formats
    return comfy.latent_formats.Wan21()


def encode_pixels(video: torch.Tensor) -> torch.Tensor:
    """[B, F, H, W, 3] in [0, 1] -> the model's working space [B, 16, F, H/2, W/2]."""
    b, f, h, w, c = video.shape
    if c != 3 or h % BLOCK or w % BLOCK:
        raise ValueError(f"expected [B, F, H, W, 3] with even H and W, got {tuple(video.shape)}")
    x = video.float() * 2 - 1
    x = x.reshape(b, f, h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3).permute(0, 1, 2, 4, 6, 3, 5)
    x = x.reshape(b, f, h // BLOCK, w // BLOCK, 12)
    z = x @ _basis().T
    return z.permute(0, 4, 1, 2, 3).contiguous()


def encode_latent(video: torch.Tensor) -> torch.Tensor:
    """[B, F, H, W, 3] in [0, 1] -> a ComfyUI LATENT tensor (Wan 2.1 latent format)."""
    return _wan21_format().process_out(encode_pixels(video))


def decode_latent(latent: torch.Tensor) -> torch.Tensor:
    """A ComfyUI LATENT tensor [B, 16, F, h, w] -> video [B, F, 2h, 2w, 3] in [0, 1] (clamped)."""
    b, c, f, h, w = latent.shape
    if c != LATENT_CHANNELS:
        raise ValueError(f"the demo latent space has {LATENT_CHANNELS} channels, got {c}")
    x = _wan21_format().process_in(latent.float()).permute(0, 2, 3, 4, 1) @ _basis()
    x = x.reshape(b, f, h, w, 3, BLOCK, BLOCK).permute(0, 1, 2, 5, 3, 6, 4)
    x = x.reshape(b, f, h * BLOCK, w * BLOCK, 3)
    return ((x + 1) / 2).clamp(0, 1)


def decode_for_display(latent: torch.Tensor, scale: int = 1) -> torch.Tensor:
    """A ComfyUI IMAGE [B*F, H, W, 3]: every frame of every video, enlarged `scale` times (nearest)."""
    if latent.ndim != 5 or latent.shape[1] != LATENT_CHANNELS:
        raise RhymeFlowInputError(
            f"the demo decoder needs a video latent [batch, {LATENT_CHANNELS}, frames, height, width], got {tuple(latent.shape)}; "
            "connect the output of a sampler that used the demo model.")
    frames = decode_latent(latent).flatten(0, 1)
    if scale > 1:
        frames = frames.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return frames


# --- prompt encoder -----------------------------------------------------------------------------

def _seeded_vector(tag: str) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little")
    return torch.randn(TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def encode_prompt(text: str) -> torch.Tensor:
    """Deterministic token embeddings [1, 32, 4096] for Wan's text projection.

    Each token (`demo_prompt.prompt_tokens`) is the sum of seeded random vectors for its word, its
    scene and its shape slot, so the cross-attention can tell which colour, kind and motion belong
    together. The empty prompt is all zeros (the unconditional input the model was trained with).
    The shipped weights were trained on these exact values (tests/test_demo_model.py pins them).
    """
    out = torch.zeros(1, TEXT_TOKENS, TEXT_DIM)
    for i, (word, scene, shape) in enumerate(prompt_tokens(text)[:TEXT_TOKENS]):
        vec = _seeded_vector("word:" + word) + 0.5 * _seeded_vector(f"scene:{scene}") + 0.5 * _seeded_vector(f"shape:{shape}")
        out[0, i] = vec / TEXT_DIM ** 0.5 * 8.0
    return out


# --- the model ---------------------------------------------------------------------------------

def load_demo_model(path: Path | str = WEIGHTS):
    """The bundled trained demo model as a ComfyUI MODEL."""
    import comfy.sd
    import comfy.utils

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RhymeFlow: demo weights not found at {path}; run `python -m tools.train_demo_model` to make them")
    return comfy.sd.load_diffusion_model_state_dict(comfy.utils.load_torch_file(str(path)))
