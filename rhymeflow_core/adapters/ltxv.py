"""Active passes for ComfyUI's LTXVModel (LTX-Video 0.9.x, model_base.LTXV).

Token layout: patch 1x1x1 on the 128-channel latent (8x temporal, 32x spatial compression), so
P = H·W rows per latent frame, frame-major. Text enters by cross-attention only (keys/values
from the projected T5 tokens, queries from image rows), so text tokens never need caching.

Everything before the blocks is ComfyUI's own code (`_common.model_inputs`): patch embedding,
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
from ..run_state import RECORD
from . import _common
from .base import ActivePassAdapter


class LTXVAdapter(ActivePassAdapter):
    name = "ltxv"
    supported = "LTX-Video 0.9.x T2V / I2V / guide frames (ComfyUI LTXV, LTXVModel)"

    @classmethod
    def matches(cls, diffusion_model) -> bool:
        return type(diffusion_model) is ltx_model.LTXVModel

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

    # ---- entry -------------------------------------------------------------------------------
    def forward(self, dm, run, to, args, kwargs):
        if to.get("stg_skip_self_attn"):
            raise RhymeFlowInputError("spatio-temporal guidance (STG) is not supported in RhymeFlow passes.")
        _common.warn_block_patches(run, to)
        x, timestep = args[0], args[1]
        b, channels, frames, h, w = x.shape
        per_frame = h * w
        run.calls[run.plan.kind] += 1

        inputs = _common.model_inputs(dm, to, args, kwargs, ("double_block", 0))
        if inputs.get("self_attention_mask") is not None:
            raise RhymeFlowInputError("LTXV guide attention strength/masks are not supported in RhymeFlow passes; "
                                      "use guide strength 1.0 without a pixel mask.")
        tokens, context, mask, vec, pe = inputs["img"], inputs["txt"], inputs["attention_mask"], inputs["vec"], inputs["pe"]
        if tokens.shape[1] != frames * per_frame:
            raise RhymeFlowInputError(f"LTXV kept {tokens.shape[1]} of {frames * per_frame} tokens (masked guide tokens); "
                                      "this is not supported in RhymeFlow passes.")
        _, embedded = compat.ltxv_timestep_embedding(dm, timestep, b, tokens.dtype)
        key_rows, nk_rows = _common.row_plan(run, frames, per_frame, tokens.device)
        stream = _Stream(run, to, tuple(to.get("uuids") or ("single",)), context, mask, nk_rows)

        if run.plan.kind == RECORD:
            out = stream.record(dm, tokens, vec, pe)
            return self._head(dm, out, embedded, channels, frames, h, w)
        out = stream.active(dm, tokens.index_select(1, key_rows), vec, pe, key_rows)
        out = self._head(dm, out, _rows(embedded, key_rows), channels, len(run.plan.keyframes), h, w)
        return _common.scatter_frames(out, run.plan.keyframes, frames)

    @staticmethod
    def _head(dm, x, embedded, channels, frames, h, w):
        shift, scale = (dm.scale_shift_table[None, None].to(device=x.device, dtype=x.dtype) + embedded[:, :, None]).unbind(2)
        x = dm.norm_out(x)
        x = dm.proj_out(torch.addcmul(x, x, scale).add_(shift))
        return dm.patchifier.unpatchify(latents=x, output_height=h, output_width=w, output_num_frames=frames, out_channels=channels)


def _rows(per_token, rows):
    """Rows of a per-token tensor [B, L, ...]; a per-sample one [B, 1, ...] applies to every row."""
    return per_token if per_token.shape[1] == 1 else per_token.index_select(1, rows)


class _Stream:
    def __init__(self, run, to, signature, context, mask, nk_rows):
        self.run, self.to, self.signature, self.context, self.mask, self.nk_rows = run, to, signature, context, mask, nk_rows
        self.mode = _common.cache_mode(run, nk_rows)

    @staticmethod
    def _modulation(block, vec, x):
        table = block.scale_shift_table[None, None, :6].to(device=x.device, dtype=x.dtype)
        return (table + vec.reshape(x.shape[0], vec.shape[1], block.scale_shift_table.shape[0], -1)[:, :, :6]).unbind(2)

    @staticmethod
    def _adaln(x, shift, scale):
        y = rms_norm(x)
        return torch.addcmul(y, y, scale).add_(shift)

    @staticmethod
    def _q(attn, y, pe):
        return compat.ltxv_rope(attn.q_norm(attn.to_q(y)), pe)

    @staticmethod
    def _kv(attn, y, pe):
        return compat.ltxv_rope(attn.k_norm(attn.to_k(y)), pe), attn.to_v(y)

    def _finish(self, block, x, q, k, v, mod):
        attn = block.attn1
        out = attn.to_out(compat.attention(q, k, v, attn.heads, attn_precision=attn.attn_precision, transformer_options=self.to))
        x = torch.addcmul(x, out, mod[2])
        x = x + block.attn2(x, context=self.context, mask=self.mask, transformer_options=self.to)
        return torch.addcmul(x, block.ff(self._adaln(x, mod[3], mod[4])), mod[5])

    def record(self, dm, x, vec, pe):
        """A full pass that also records the non-keyframe context for the next active passes."""
        run, a = self.run, x.shape[1] - self.nk_rows.numel()
        if self.mode != "keyframe_only":
            per_block = (2 if self.mode == "kv_cache" else 1) * x.numel() * x.element_size()
            run.cache.choose_device(x.device, per_block * len(dm.transformer_blocks))
        for i, block in enumerate(dm.transformer_blocks):
            self.to["block_index"] = i
            mod = self._modulation(block, vec, x)
            if self.mode == "hidden_cache":
                run.cache.store(self.signature, i, (_common.scratch_buffer(x, self.nk_rows, a, 1),))
            y = self._adaln(x, mod[0], mod[1])
            q = self._q(block.attn1, y, pe)
            k, v = self._kv(block.attn1, y, pe)
            if self.mode == "kv_cache":
                run.cache.store(self.signature, i, (_common.scratch_buffer(k, self.nk_rows, a, 1),
                                                    _common.scratch_buffer(v, self.nk_rows, a, 1)))
            x = self._finish(block, x, q, k, v, mod)
        return x

    def active(self, dm, x, vec, pe, key_rows):
        """Keyframe rows through every block; non-keyframe K/V from the cache."""
        run, a = self.run, x.shape[1]
        mode = run.config.context if self.mode != "keyframe_only" else "keyframe_only"
        vec_key = _rows(vec, key_rows)
        pe_key = compat.ltxv_pe_rows(pe, key_rows)
        if mode == "hidden_cache":
            # Cached buffers hold keyframe rows first; stale rows get their current per-token vectors.
            buf_rows = torch.cat([key_rows, self.nk_rows])
            pe_buf, vec_buf = compat.ltxv_pe_rows(pe, buf_rows), _rows(vec, buf_rows)
        for i, block in enumerate(dm.transformer_blocks):
            self.to["block_index"] = i
            mod = self._modulation(block, vec_key, x)
            y = self._adaln(x, mod[0], mod[1])
            q = self._q(block.attn1, y, pe_key)
            if mode == "hidden_cache":
                (hidden,) = run.cache.load(self.signature, i, x.device)
                hidden[:, :a] = x
                mod_all = self._modulation(block, vec_buf, hidden)
                k, v = self._kv(block.attn1, self._adaln(hidden, mod_all[0], mod_all[1]), pe_buf)
            else:
                k, v = self._kv(block.attn1, y, pe_key)
                if mode == "kv_cache":
                    k_buf, v_buf = run.cache.load(self.signature, i, x.device)
                    k_buf[:, :a] = k
                    v_buf[:, :a] = v
                    k, v = k_buf, v_buf
            x = self._finish(block, x, q, k, v, mod)
        return x
