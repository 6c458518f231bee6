"""Stand-ins for three ComfyUI-KJNodes model patches, each reproducing only the hook the node installs.

Read, not copied: kijai/ComfyUI-KJNodes at commit 3f20054 (2026-08).

* "Patch Sage Attention KJ" (`PathchSageAttentionKJ.patch`, nodes/model_optimization_nodes.py
  lines 105-136): clones the MODEL and sets `model_options["transformer_options"]
  ["optimized_attention_override"]` to a function `(func, *args, **kwargs)` that calls sageattn
  instead of `func`. ComfyUI 0.3.75 calls that override from `wrap_attn`
  (comfy/ldm/modules/attention.py) whenever `transformer_options` reach `optimized_attention`.
  The stand-in computes plain PyTorch SDPA (no sageattention on a CPU) and records every call.
* "Apply RifleXRoPE WanVideo" (`ApplyRifleXRoPE_WanVideo.patch`, nodes/nodes.py lines 2544-2578):
  `add_object_patch("diffusion_model.rope_embedder", EmbedND_RifleX(...))`, an embedder whose
  temporal axis has its k-th intrinsic frequency replaced by 0.9 * 2 pi / frames (RIFLEx,
  arXiv 2502.15894). The stand-in is the same object patch with its own RoPE code.
* "WanVideoNAG" (`WanVideoNAG.patch`, nodes/model_optimization_nodes.py lines 1258-1300, with
  `WanCrossAttentionPatch` and `wan_crossattn_forward_nag` above it): embeds the NAG negative prompt
  with the model's `text_embedding` and sets `add_object_patch(f"diffusion_model.blocks.{i}.cross_attn.forward", ...)`
  for every block: the positive half of the batch attends to its prompt and to the negative prompt
  and mixes the two by normalized attention guidance (arXiv 2505.21179: extrapolate, clip the L1
  norm ratio at tau, blend with alpha); a negative half (batch of 2) gets plain cross-attention.
"""
from __future__ import annotations

import math

import torch
from comfy.ldm.modules import attention as comfy_attention


class SageAttentionStandIn:
    """The override KJNodes' sage node installs, as plain SDPA that records (pass kind, query rows) per call."""

    def __init__(self):
        self.calls: list[tuple[str | None, int]] = []

    def apply(self, model):
        from rhymeflow_core.patch import pass_kind

        def override(func, q, k, v, *args, **kwargs):
            to = kwargs.get("transformer_options") or {}
            self.calls.append((pass_kind(to), q.shape[0] * q.shape[1]))
            return comfy_attention.attention_pytorch.__wrapped__(q, k, v, *args, **kwargs)

        m = model.clone()
        m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
        return m


def _rope_axis(pos, dim: int, theta: float, frequency: tuple[int, float] | None = None):
    """Rotation matrices [..., dim/2, 2, 2] for positions `pos`; `frequency` = (index, value) replaces one."""
    omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim)
    if frequency is not None:
        omega[frequency[0]] = frequency[1]
    angle = pos.to(torch.float64).unsqueeze(-1) * omega
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2)).float()


class RifleXRoPEStandIn(torch.nn.Module):
    """Wan's RoPE embedder with RIFLEx's temporal frequency; `k=None` gives the stock embedding."""

    def __init__(self, stock, frames: int, k: int | None = 6):
        super().__init__()
        self.theta, self.axes_dim = stock.theta, list(stock.axes_dim)
        self.frequency = None if k is None else (k - 1, 0.9 * 2 * math.pi / frames)

    def forward(self, ids):
        axes = [_rope_axis(ids[..., i], d, self.theta, self.frequency if i == 0 else None) for i, d in enumerate(self.axes_dim)]
        return torch.cat(axes, dim=-3).unsqueeze(1)

    @classmethod
    def apply(cls, model, frames: int, k: int | None = 6):
        m = model.clone()
        m.add_object_patch("diffusion_model.rope_embedder", cls(model.get_model_object("diffusion_model").rope_embedder, frames, k))
        return m


def _nag(positive, negative, scale: float, tau: float, alpha: float):
    guided = positive * scale - negative * (scale - 1)
    ratio = guided.norm(p=1, dim=-1, keepdim=True).clamp_min(1e-6) / positive.norm(p=1, dim=-1, keepdim=True).clamp_min(1e-6)
    guided = guided * ratio.clamp(max=tau) / ratio
    return guided * alpha + positive * (1 - alpha)


class WanNAGStandIn:
    """KJNodes' WanVideoNAG hook (T2V cross-attention): an object patch of every block's cross_attn.forward."""

    def __init__(self, negative_context, scale: float = 11.0, alpha: float = 0.25, tau: float = 2.5):
        self.negative, self.scale, self.alpha, self.tau = negative_context, scale, alpha, tau
        self.calls: list[int] = []   # query rows of each patched cross-attention call

    def apply(self, model):
        m = model.clone()
        dm = m.get_model_object("diffusion_model")
        with torch.no_grad():
            nag_context = dm.text_embedding(self.negative)
        for i, block in enumerate(dm.blocks):
            m.add_object_patch(f"diffusion_model.blocks.{i}.cross_attn.forward", self._forward(block.cross_attn, nag_context))
        return m

    def _forward(self, attn, nag_context):
        def attend(q, context, to):
            k, v = attn.norm_k(attn.k(context)), attn.v(context)
            return comfy_attention.optimized_attention(q, k, v, heads=attn.num_heads, transformer_options=to)

        def forward(x, context, transformer_options=None, **kwargs):
            self.calls.append(x.shape[0] * x.shape[1])
            halves = (x, context) if context.shape[0] == 1 else (x.chunk(2)[0], context.chunk(2)[0])
            q = attn.norm_q(attn.q(halves[0]))
            positive = attend(q, halves[1], transformer_options)
            negative = attend(q, nag_context.to(q).expand(q.shape[0], -1, -1), transformer_options)
            out = _nag(positive, negative, self.scale, self.tau, self.alpha)
            if context.shape[0] > 1:   # the CFG negative half: plain cross-attention
                x_neg, c_neg = x.chunk(2)[1], context.chunk(2)[1]
                out = torch.cat([out, attend(attn.norm_q(attn.q(x_neg)), c_neg, transformer_options)])
            return attn.o(out)

        return forward
