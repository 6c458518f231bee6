"""Active passes for ComfyUI's HunyuanVideo class (HunyuanVideo 1.0 and HunyuanVideo 1.5).

Token layout: image tokens are frame-major, P = H'·W' rows per latent frame (patch 1x2x2 for
1.0, 1x1x1 for 1.5), followed (0.3.x) or preceded (v0.33+) by the refined text tokens
(plus ByT5 / vision tokens in 1.5). Double-stream blocks keep separate image and text weights
and attend jointly over [image, text]; single-stream blocks run on the concatenated sequence.

Everything before the blocks is ComfyUI's own code (see `block_inputs.model_inputs`): embedded
guidance, pooled CLIP (`y`), ByT5, vision tokens, the concatenated image latents and masks of
the I2V/1.5 variants (extra input channels travel with each frame) and the text mask.

Text tokens in an active pass: they are **queries too**. They are few (hundreds against tens of
thousands of image rows), depend on the current timestep and guidance through the modulation,
and are shared by every frame, so they are recomputed in every pass, attending to the fresh
keyframe rows, the cached non-keyframe rows and themselves. Only non-keyframe image rows come
from the cache recorded at the rhythmic point:
  kv_cache      roped K and V of the non-keyframe image rows, per block (double and single);
  hidden_cache  the block-input image rows, re-modulated with the current vector and projected;
  keyframe_only keyframe image rows and text only.
So on a fresh cache an active pass equals the stock forward on keyframe rows, and with every
frame a keyframe it is the stock forward. CFG and embedded guidance need nothing special: each
call carries its own `guidance`/text, and the cache is keyed by the call's cond uuids.
"""
from __future__ import annotations

import torch
from comfy.ldm.hunyuan_video import model as hv_model

from .. import compat
from ..errors import RhymeFlowInputError
from ..run_state import ContextMode
from . import block_inputs
from .base import ActivePassAdapter, scatter_keyframes

# model_base classes sampled through the HunyuanVideo diffusion model that are video models we handle.
_VIDEO_BASES = ("HunyuanVideo", "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V", "HunyuanVideo15")
_FORWARD_ARGS = ("x", "timestep", "context", "y", "txt_byt5", "clip_fea", "guidance", "attention_mask",
                 "guiding_frame_index", "ref_latent", "disable_time_r", "control")


class HunyuanVideoAdapter(ActivePassAdapter):
    name = "hunyuan_video"
    supported = ("HunyuanVideo 1.0 T2V / I2V (concat or token replace) and HunyuanVideo 1.5 T2V / I2V "
                 "(ComfyUI HunyuanVideo, HunyuanVideoI2V, HunyuanVideoSkyreelsI2V, HunyuanVideo15)")
    diffusion_model_class = hv_model.HunyuanVideo

    @classmethod
    def check_model(cls, model_patcher) -> None:
        base = type(model_patcher.model).__name__
        dm = model_patcher.model.diffusion_model
        if base not in _VIDEO_BASES:
            raise RhymeFlowInputError(f"model class {base} (HunyuanVideo diffusion model) is not supported: it is an image "
                                      f"or super-resolution variant. Supported: {cls.supported}.")
        if len(dm.patch_size) != 3 or dm.patch_size[0] != 1:
            raise RhymeFlowInputError("the HunyuanVideo model uses a temporal patch size above 1; RhymeFlow needs one "
                                      "token row-block per latent frame.")
        if any(getattr(b, "yak_mlp", False) for b in dm.single_blocks):
            raise RhymeFlowInputError(f"this HunyuanVideo variant uses a gated MLP; supported: {cls.supported}.")

    def check_call(self, hv, to, args, kwargs) -> None:
        call = _call_args(args, kwargs)
        for name, what in (("ref_latent", "reference latents (guidance_type custom)"), ("control", "ControlNet")):
            if call.get(name) is not None:
                raise RhymeFlowInputError(f"{what} is not supported in RhymeFlow passes for HunyuanVideo yet; "
                                          "use T2V or image conditioning with guidance_type v1 (concat) or v2 (replace).")

    def token_grid(self, hv, args, kwargs) -> tuple[int, int]:
        _, _, frames, h, w = _call_args(args, kwargs)["x"].shape
        return frames, (h // hv.patch_size[1]) * (w // hv.patch_size[2])

    def run_pass(self, hv, ctx, args, kwargs):
        b, _, frames, h, w = _call_args(args, kwargs)["x"].shape
        inputs = block_inputs.model_inputs(hv, ctx.to, args, kwargs, ("double_block", 0))
        img, txt, vec, pe, mask = inputs["img"], inputs["txt"], inputs["vec"], inputs["pe"], inputs["attention_mask"]
        grid = (h // hv.patch_size[1], w // hv.patch_size[2])
        per_frame = ctx.per_frame
        # I2V token replace (guidance_type v2): vec is [B, 2, D], frame 0's image rows take entry 0 (the
        # clean image's timestep), every other row entry 1. Frame 0 is always a keyframe and comes first
        # in every row set this adapter builds (all frames, keyframes, keyframes + non-keyframes).
        clean_rows = 0
        if inputs.get("modulation_dims_img") is not None:
            if inputs["modulation_dims_img"] != [(0, per_frame, 0), (per_frame, None, 1)] or 0 not in ctx.keyframes:
                raise RhymeFlowInputError(f"unexpected HunyuanVideo per-token modulation {inputs['modulation_dims_img']}; "
                                          "only I2V token replace of the first frame is supported in RhymeFlow passes.")
            clean_rows = per_frame
        img_len, txt_len = img.shape[1], txt.shape[1]
        if img_len != frames * per_frame:
            raise RhymeFlowInputError(f"HunyuanVideo built {img_len} image tokens for {frames} frames of {per_frame}; "
                                      "extra image tokens (reference latents) are not supported in RhymeFlow passes.")
        # Text comes first in the sequence on newer ComfyUI, last on 0.3.x (RoPE table and mask follow it).
        img_at, txt_at = (txt_len, 0) if compat.hunyuan_text_first(hv) else (0, img_len)
        pe_img, pe_txt = pe[:, :, img_at:img_at + img_len], pe[:, :, txt_at:txt_at + txt_len]
        txt_mask = None if mask is None else mask[..., txt_at:txt_at + txt_len]

        # Single blocks: the host applies the same ranges to its joint sequence, so with text first
        # (newer ComfyUI) the clean entry lands on the first text rows (and image rows past the text).
        single_clean = (clean_rows, 0)
        if clean_rows and compat.hunyuan_text_first(hv):
            single_clean = (max(0, clean_rows - txt_len), min(txt_len, clean_rows))
        stream = _Stream(ctx, vec, txt_mask, clean_rows, single_clean)
        if ctx.recording:
            ctx.reserve(img, len(hv.double_blocks) + len(hv.single_blocks))
            out_img = stream.run_blocks(hv, img, txt, pe_img, pe_txt)
            out_frames = frames
        else:
            pe_key = pe_img.index_select(2, ctx.key_rows)
            if ctx.mode == ContextMode.HIDDEN_CACHE:
                stream.pe_buf = torch.cat([pe_key, pe_img.index_select(2, ctx.nk_rows)], dim=2)
            out_img = stream.run_blocks(hv, img.index_select(1, ctx.key_rows), txt, pe_key, pe_txt)
            out_frames = len(ctx.keyframes)
        dims = [(0, clean_rows, 0), (clean_rows, None, 1)] if clean_rows else None
        out = hv.final_layer(out_img, vec, modulation_dims=dims)
        out = _unpatchify(out, b, hv.out_channels, (out_frames,) + grid, hv.patch_size)
        return out if ctx.recording else scatter_keyframes(out, ctx)

    def bypassed_modules(self, hv):
        for i, block in enumerate(hv.double_blocks):
            block = compat.compiled_module(block)[0]
            yield f"double_blocks.{i}", block
            yield f"double_blocks.{i}.img_attn", block.img_attn   # its qkv / norm / proj are called, not its forward
            yield f"double_blocks.{i}.txt_attn", block.txt_attn
        for i, block in enumerate(hv.single_blocks):
            yield f"single_blocks.{i}", compat.compiled_module(block)[0]


def _call_args(args, kwargs) -> dict:
    call = dict(zip(_FORWARD_ARGS, args, strict=False))  # args may stop early
    call.update({k: v for k, v in kwargs.items() if k in _FORWARD_ARGS})
    return call


def _unpatchify(t, b, channels, grid, patch):
    f, gh, gw = grid
    t = t.reshape(b, f, gh, gw, channels, *patch).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return t.reshape(b, channels, f * patch[0], gh * patch[1], gw * patch[2])


def _rows(m, rows: int, clean_rows: int):
    """A modulation tensor for `rows` rows: [B, 1, D] as is; token replace's [B, 2, D] as entry 0 for
    the first `clean_rows` rows and entry 1 for the rest (what the host's apply_mod does by ranges)."""
    if m.shape[1] == 1:
        return m
    return torch.cat([m[:, :1].expand(-1, clean_rows, -1), m[:, 1:].expand(-1, rows - clean_rows, -1)], dim=1)


def _heads(qkv, heads):
    """[B, L, 3·D] -> q, k, v as [B, heads, L, head_dim] (the host's layout for skip_reshape attention)."""
    return qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)


class _Stream:
    """One RECORD or ACTIVE pass through the double- and single-stream blocks.

    Image query rows are all rows (RECORD) or the keyframe rows (ACTIVE); text rows are always
    all queries. Attention keys are laid out [image rows, text rows]; in ACTIVE passes the image
    part is [keyframes (scratch rows of the cached buffer), cached non-keyframes].
    """

    def __init__(self, ctx, vec, txt_mask, clean_rows=0, single_clean=(0, 0)):
        self.ctx, self.to, self.vec, self.txt_mask = ctx, ctx.to, vec, txt_mask
        self.clean_rows, self.single_clean = clean_rows, single_clean
        self.pe_buf = None   # hidden_cache in ACTIVE passes: RoPE rows of [keyframes, cached non-keyframes]

    def run_blocks(self, hv, img, txt, pe_img, pe_txt):
        to = self.to
        if any(compat.compiled_module(b)[1] is not None for b in (*hv.double_blocks, *hv.single_blocks)):
            # Not yet written as pass functions (compiled_blocks.py), as Wan's and LTX-Video's blocks are.
            self.ctx.run.report.warn("compiled_blocks", "compiled HunyuanVideo blocks run uncompiled in rhythmic and "
                                                        "active passes (compiled in warm-up passes).")
        to["total_blocks"], to["block_type"] = len(hv.double_blocks), "double"
        for i, block in enumerate(hv.double_blocks):
            to["block_index"] = i
            img, txt = self._double(block, i, img, txt, pe_img, pe_txt)
        to["total_blocks"], to["block_type"] = len(hv.single_blocks), "single"
        for j, block in enumerate(hv.single_blocks):
            to["block_index"] = j
            img, txt = self._single(block, len(hv.double_blocks) + j, img, txt, pe_img, pe_txt)
        return img

    # ---- the context (non-keyframe image rows) ----------------------------------------------
    def _image_kv(self, index, rows_in, k, v, project):
        """Keys/values of all image rows this pass attends to, recording or reading the cache.

        rows_in: the block-input image rows of this pass; k, v: their fresh roped K/V [B, H, L, d];
        project(rows, pe) -> (k, v) for hidden_cache re-projection.
        """
        ctx = self.ctx
        if not ctx.cached:
            return k, v
        if ctx.recording:
            if ctx.mode == ContextMode.KV_CACHE:
                ctx.store(index, k, v, dim=2)
            else:
                ctx.store(index, rows_in)
            return k, v
        if ctx.mode == ContextMode.KV_CACHE:
            return ctx.with_cached(index, k, v, dim=2)
        (hidden,) = ctx.with_cached(index, rows_in)
        return project(hidden, self.pe_buf)

    def _attention(self, q, k, v, heads):
        mask = self.txt_mask
        if mask is not None:  # image keys are never masked; text keys keep the model's own mask
            image_keys = k.shape[2] - mask.shape[-1]
            mask = torch.cat([mask.new_zeros(mask.shape[:-1] + (image_keys,)), mask], dim=-1)
        return compat.attention(q, k, v, heads, skip_reshape=True, mask=mask, transformer_options=self.to)

    # ---- blocks (the host's DoubleStreamBlock / SingleStreamBlock math, by module calls) -----
    def _double(self, block, index, img, txt, pe_img, pe_txt):
        img_mod1, img_mod2 = block.img_mod(self.vec)
        txt_mod1, txt_mod2 = block.txt_mod(self.vec)
        heads, clean = block.num_heads, self.clean_rows

        def img_m(m, rows):
            return _rows(m, rows, clean)

        def txt_m(m):  # text rows always take the noisy entry
            return m if m.shape[1] == 1 else m[:, 1:]

        def qkv(attn, norm, rows, mod, pe, m):
            q, k, v = _heads(attn.qkv(torch.addcmul(m(mod.shift), norm(rows), 1 + m(mod.scale))), heads)
            q, k = attn.norm(q, k, v)
            return compat.apply_rope1(q, pe), compat.apply_rope1(k, pe), v

        n = img.shape[1]
        img_q, img_k, img_v = qkv(block.img_attn, block.img_norm1, img, img_mod1, pe_img, lambda m: img_m(m, n))
        txt_q, txt_k, txt_v = qkv(block.txt_attn, block.txt_norm1, txt, txt_mod1, pe_txt, txt_m)
        img_k, img_v = self._image_kv(index, img, img_k, img_v, lambda rows, pe: qkv(
            block.img_attn, block.img_norm1, rows, img_mod1, pe, lambda m: img_m(m, rows.shape[1]))[1:])
        attn = self._attention(torch.cat((img_q, txt_q), 2), torch.cat((img_k, txt_k), 2), torch.cat((img_v, txt_v), 2), heads)
        img_attn, txt_attn = attn[:, :n], attn[:, n:]

        img = img + block.img_attn.proj(img_attn) * img_m(img_mod1.gate, n)
        img = img + block.img_mlp(torch.addcmul(img_m(img_mod2.shift, n), block.img_norm2(img), 1 + img_m(img_mod2.scale, n))) \
            * img_m(img_mod2.gate, n)
        txt = txt + block.txt_attn.proj(txt_attn) * txt_m(txt_mod1.gate)
        txt = txt + block.txt_mlp(torch.addcmul(txt_m(txt_mod2.shift), block.txt_norm2(txt), 1 + txt_m(txt_mod2.scale))) \
            * txt_m(txt_mod2.gate)
        if txt.dtype == torch.float16:
            txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
        return img, txt

    def _single(self, block, index, img, txt, pe_img, pe_txt):
        mod, _ = block.modulation(self.vec)
        heads, n = block.num_heads, img.shape[1]
        clean_img, clean_txt = self.single_clean

        def rows_of(t, img_rows, txt_rows):  # per-row modulation for [image rows, text rows]
            if t.shape[1] == 1:
                return t
            return torch.cat([_rows(t, img_rows, min(clean_img, img_rows)), _rows(t, txt_rows, clean_txt)], dim=1)

        def linear1(rows, txt_rows):
            shift, scale = rows_of(mod.shift, rows.shape[1] - txt_rows, txt_rows), rows_of(mod.scale, rows.shape[1] - txt_rows, txt_rows)
            out = block.linear1(torch.addcmul(shift, block.pre_norm(rows), 1 + scale))
            return torch.split(out, [3 * block.hidden_size, block.mlp_hidden_dim_first], dim=-1)

        def project(rows, pe):  # hidden_cache: K/V of the buffered image rows (their MLP half is unused)
            _, k, v = _heads(linear1(rows, 0)[0], heads)
            k = block.norm.key_norm(k).to(v)
            return compat.apply_rope1(k, pe), v

        x = torch.cat((img, txt), 1)
        qkv, mlp = linear1(x, txt.shape[1])
        q, k, v = _heads(qkv, heads)
        q, k = block.norm(q, k, v)
        pe = torch.cat((pe_img, pe_txt), 2)
        q, k = compat.apply_rope1(q, pe), compat.apply_rope1(k, pe)
        img_k, img_v = self._image_kv(index, img, k[:, :, :n], v[:, :, :n], project)
        attn = self._attention(q, torch.cat((img_k, k[:, :, n:]), 2), torch.cat((img_v, v[:, :, n:]), 2), heads)
        x = x + block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2)) * rows_of(mod.gate, n, txt.shape[1])
        if x.dtype == torch.float16:
            x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
        return x[:, :n], x[:, n:]
