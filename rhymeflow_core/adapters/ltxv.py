"""Active passes for ComfyUI's LTXVModel (LTX-Video 0.9.x, model_base.LTXV).

Token layout: patch 1x1x1 on the 128-channel latent (8x temporal, 32x spatial compression), so
P = H·W rows per latent frame, frame-major. Text enters by cross-attention only (keys/values
from the projected T5 tokens, queries from image rows), so text tokens never need caching.

Everything before the blocks is ComfyUI's own code (`block_inputs.model_inputs`): patch embedding,
the RoPE table from pixel coordinates and frame rate, the caption projection and mask.
Per-token timesteps (model_base.LTXV turns the noise mask of image-to-video / LTXVAddGuide into
one timestep per token) are per-row AdaLN vectors, so an active pass simply takes the keyframe
rows of them. Guide frames appended by LTXVAddGuide are extra latent frames at the end, with
their own RoPE positions (keyframe_idxs) and timestep 0; they are ordinary frames to RhymeFlow
(cached like any non-keyframe when not chosen), which keeps every pass exact.

Non-keyframe context in an active pass, recorded at the rhythmic point per block:
  kv_cache      roped self-attention K and V of the non-keyframe rows;
  hidden_cache  block-input rows, re-modulated with the current per-token vectors and projected;
  keyframe_only none.
LTX-2 features (cross-attention AdaLN, gated attention, keyframe position embedding, guide
attention masks, STG) are refused: their block math differs and is not covered here.
"""
from __future__ import annotations

import torch
from comfy.ldm.common_dit import rms_norm
from comfy.ldm.lightricks import model as ltx_model

from .. import compat
from ..errors import RhymeFlowInputError
from ..run_state import ContextMode
from . import block_inputs
from .base import ALL, BUF, KEY, ActivePassAdapter, SingleStreamBlocks, scatter_keyframes


class LTXVAdapter(ActivePassAdapter):
    name = "ltxv"
    supported = "LTX-Video 0.9.x T2V / I2V / guide frames (ComfyUI LTXV, LTXVModel)"
    diffusion_model_class = ltx_model.LTXVModel

    @classmethod
    def check_model(cls, model_patcher) -> None:
        dm = model_patcher.model.diffusion_model
        ltx2 = [f for f in ("cross_attention_adaln", "use_keyframes_abs_pos_embedding") if getattr(dm, f, False)]
        if any(getattr(b.attn1, "to_gate_logits", None) is not None for b in dm.transformer_blocks):
            ltx2.append("gated attention")
        if ltx2:
            raise RhymeFlowInputError(f"this LTX model uses LTX-2 features ({', '.join(ltx2)}); supported: {cls.supported}.")
        if tuple(dm.patchifier.patch_size) != (1, 1, 1):
            raise RhymeFlowInputError("the LTXV model patchifies more than one latent frame per token; RhymeFlow needs patch 1x1x1.")

    def check_call(self, dm, to, args, kwargs) -> None:
        if to.get("stg_skip_self_attn"):
            raise RhymeFlowInputError("spatio-temporal guidance (STG) is not supported in RhymeFlow passes.")

    def token_grid(self, dm, args, kwargs) -> tuple[int, int]:
        _, _, frames, h, w = args[0].shape
        return frames, h * w

    def run_pass(self, dm, ctx, args, kwargs):
        x, timestep = args[0], args[1]
        b, channels, frames, h, w = x.shape
        inputs = block_inputs.model_inputs(dm, ctx.to, args, kwargs, ("double_block", 0))
        if inputs.get("self_attention_mask") is not None:
            raise RhymeFlowInputError("LTXV guide attention strength/masks are not supported in RhymeFlow passes; "
                                      "use guide strength 1.0 without a pixel mask.")
        tokens, context, mask, vec, pe = inputs["img"], inputs["txt"], inputs["attention_mask"], inputs["vec"], inputs["pe"]
        if tokens.shape[1] != frames * ctx.per_frame:
            raise RhymeFlowInputError(f"LTXV kept {tokens.shape[1]} of {frames * ctx.per_frame} tokens (masked guide tokens); "
                                      "this is not supported in RhymeFlow passes.")
        _, embedded = compat.ltxv_timestep_embedding(dm, timestep, b, tokens.dtype)
        blocks = _LTXVBlocks(ctx, vec, pe, context, mask)
        if ctx.recording:
            out = blocks.record(dm.transformer_blocks, tokens)
            return self._head(dm, out, embedded, channels, frames, h, w)
        out = blocks.active(dm.transformer_blocks, tokens.index_select(1, ctx.key_rows))
        out = self._head(dm, out, _rows(embedded, ctx.key_rows), channels, len(ctx.keyframes), h, w)
        return scatter_keyframes(out, ctx)

    def bypassed_modules(self, dm):
        for i, block in enumerate(dm.transformer_blocks):
            block = compat.compiled_module(block)[0]
            yield f"transformer_blocks.{i}", block
            yield f"transformer_blocks.{i}.attn1", block.attn1   # its to_q / to_k / to_v / to_out and norms are called

    @staticmethod
    def _head(dm, x, embedded, channels, frames, h, w):
        shift, scale = (dm.scale_shift_table[None, None].to(device=x.device, dtype=x.dtype) + embedded[:, :, None]).unbind(2)
        x = dm.norm_out(x)
        x = dm.proj_out(torch.addcmul(x, x, scale).add_(shift))
        return dm.patchifier.unpatchify(latents=x, output_height=h, output_width=w, output_num_frames=frames, out_channels=channels)


def _rows(per_token, rows):
    """Rows of a per-token tensor [B, L, ...]; a per-sample one [B, 1, ...] applies to every row."""
    return per_token if per_token.shape[1] == 1 else per_token.index_select(1, rows)


class _LTXVBlocks(SingleStreamBlocks):
    """LTXV's BasicTransformerBlock math (comfy/ldm/lightricks/model.py) by module calls, for the shared passes.
    Per-token AdaLN vectors and RoPE rows are taken for each row set."""

    def __init__(self, ctx, vec, pe, context, mask):
        super().__init__(ctx)
        self.context, self.mask = context, mask
        self.vec, self.pe = {ALL: vec}, {ALL: pe}
        if not ctx.recording:
            self.vec[KEY], self.pe[KEY] = _rows(vec, ctx.key_rows), compat.ltxv_pe_rows(pe, ctx.key_rows)
            if ctx.mode == ContextMode.HIDDEN_CACHE:   # cached buffers hold keyframe rows first
                buf_rows = torch.cat([ctx.key_rows, ctx.nk_rows])
                self.vec[BUF], self.pe[BUF] = _rows(vec, buf_rows), compat.ltxv_pe_rows(pe, buf_rows)

    def modulation(self, block, rows, like):
        vec = self.vec[rows]
        table = block.scale_shift_table[None, None, :6].to(device=like.device, dtype=like.dtype)
        return (table + vec.reshape(like.shape[0], vec.shape[1], block.scale_shift_table.shape[0], -1)[:, :, :6]).unbind(2)

    def modulate(self, block, x, mod):
        return _adaln(x, mod[0], mod[1])

    def q(self, block, y, rows):
        attn = block.attn1
        return compat.ltxv_rope(attn.q_norm(attn.to_q(y)), self.pe[rows])

    def kv(self, block, y, rows):
        attn = block.attn1
        return compat.ltxv_rope(attn.k_norm(attn.to_k(y)), self.pe[rows]), attn.to_v(y)

    def finish(self, block, x, q, k, v, mod):
        attn, to = block.attn1, self.ctx.to
        out = attn.to_out(compat.attention(q, k, v, attn.heads, attn_precision=attn.attn_precision, transformer_options=to))
        x = torch.addcmul(x, out, mod[2])
        x = x + block.attn2(x, context=self.context, mask=self.mask, transformer_options=to)
        return torch.addcmul(x, block.ff(_adaln(x, mod[3], mod[4])), mod[5])


def _adaln(x, shift, scale):
    y = rms_norm(x)
    return torch.addcmul(y, y, scale).add_(shift)
