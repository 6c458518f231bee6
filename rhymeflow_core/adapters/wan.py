"""Active passes for ComfyUI's WanModel: Wan 2.1 T2V / I2V / FLF2V, Wan 2.2 A14B T2V / I2V, Wan 2.2 TI2V-5B.

docs/algorithm.md §4. Tokens are frame-major, P = H'·W' rows per latent frame. In an ACTIVE pass only the
keyframe rows go through the blocks as queries; the non-keyframe rows' keys and values come
from the cache recorded at the last rhythmic point:
  kv_cache      roped K and V of non-keyframe rows (no norm/projection of stale rows);
  hidden_cache  block-input hidden states of non-keyframe rows, re-modulated with the current t
                and projected to K/V again (the reference code's behaviour);
  keyframe_only no context from non-keyframes at all (the "w/o projection" ablation).
Image-to-video inputs ride along per frame: `c_concat` (mask + image latents) is already part of
x's channels, so slicing keyframes slices it too; CLIP-vision tokens join the text in cross-attention
of every pass; per-frame timesteps (TI2V-5B's denoise mask) select each row's own modulation.
Frames the concat mask conditions are reported to the sampler, which keeps them as keyframes.
Weights are only touched through module calls, so comfy.ops casting / offload keeps working,
and attention goes through ComfyUI's optimized_attention with transformer_options.
"""
from __future__ import annotations

import torch
from comfy.ldm.common_dit import pad_to_patch_size
from comfy.ldm.wan import model as wan_model

from .. import compat, parallel
from ..errors import RhymeFlowInputError
from ..keyframes import conditioned_frames
from ..run_state import ContextMode
from .base import ALL, BUF, KEY, MINE, ActivePassAdapter, SingleStreamBlocks, scatter_keyframes


def _per_frame_timesteps(timestep) -> bool:
    return timestep.ndim > 1 and timestep.shape[1] > 1


def _rows(v, per_frame: int):
    """A modulation vector [B, 1, D] (one timestep) or [B, F, D] (one per frame, rows frame-major; per_frame 1:
    already one per row, as in a sequence-parallel pass)."""
    return v if v.shape[1] == 1 or per_frame == 1 else v.repeat_interleave(per_frame, dim=1)


class WanAdapter(ActivePassAdapter):
    name = "wan"
    supported = ("Wan 2.1 T2V / I2V / FLF2V, Wan 2.2 A14B T2V / I2V experts and Wan 2.2 TI2V-5B "
                 "(ComfyUI WanModel)")
    diffusion_model_class = wan_model.WanModel   # exact: VACE, Camera, S2V, ... subclasses run their own forward_orig
    sequence_parallel = True
    partial_passes = True

    @classmethod
    def check_model(cls, model_patcher) -> None:
        dm = model_patcher.model.diffusion_model
        if dm.ref_conv is not None:
            raise RhymeFlowInputError(
                f"this Wan model has a reference-image input (ref_conv, a Wan Fun reference variant); it is not supported. "
                f"Supported: {cls.supported}.")
        extra = dm.patch_embedding.weight.shape[1] - dm.out_dim
        if extra not in (0, dm.out_dim + 4):
            raise RhymeFlowInputError(
                f"this Wan model takes {dm.patch_embedding.weight.shape[1]} input channels for {dm.out_dim} latent channels "
                f"(a control or other concat variant); RhymeFlow supports none or the image-to-video mask + image "
                f"({dm.out_dim + 4} extra). Supported: {cls.supported}.")
        if tuple(dm.patch_size)[0] != 1:
            raise RhymeFlowInputError("the Wan model uses a temporal patch size above 1; RhymeFlow needs one token row-block per latent frame.")

    def conditioned_frames(self, wan, args, kwargs) -> set[int]:
        """Frames whose image-to-video mask channels (c_concat: 4 mask, then image latents) say 'given'."""
        x, out_dim = args[0], wan.out_dim
        if x.shape[1] != out_dim * 2 + 4:
            return set()
        # The concat mask is 1 where a frame is given, the inverse of a denoise mask.
        return conditioned_frames(1 - x[:, out_dim:out_dim + 4], x.shape[2])

    def check_call(self, wan, to, args, kwargs) -> None:
        x, timestep = args[0], args[1]
        time_dim_concat = args[4] if len(args) > 4 else kwargs.get("time_dim_concat")
        if time_dim_concat is not None or kwargs.get("context_latents") is not None:
            raise RhymeFlowInputError("reference frames appended along time (time_dim_concat / context_latents, e.g. Phantom "
                                      "subject-to-video) are not supported in RhymeFlow passes; sample this workflow without RhymeFlow.")
        if _per_frame_timesteps(timestep) and timestep.shape[1] != x.shape[2]:
            raise RhymeFlowInputError(f"per-token timesteps ({timestep.shape[1]} for {x.shape[2]} latent frames) are not supported "
                                      "in Wan RhymeFlow passes; only one timestep per latent frame (TI2V-5B's denoise mask).")

    def check_parallel(self, wan, ctx) -> None:
        parallel.check(ctx.group, wan.num_heads, ctx.mode == ContextMode.HIDDEN_CACHE, wan.blocks)

    def token_grid(self, wan, args, kwargs) -> tuple[int, int]:
        _, _, frames, h, w = args[0].shape
        return frames, -(-h // wan.patch_size[1]) * -(-w // wan.patch_size[2])

    def run_pass(self, wan, ctx, args, kwargs):
        x, timestep, context = args[0], args[1], args[2]
        clip_fea = args[3] if len(args) > 3 else kwargs.get("clip_fea")
        _, _, frames, h, w = x.shape
        grid_hw = (-(-h // wan.patch_size[1]), -(-w // wan.patch_size[2]))

        # e: [B, 1 or F, D], e0: [B, 1 or F, 6, D] (F with per-frame timesteps, frame order).
        e = wan.time_embedding(wan_model.sinusoidal_embedding_1d(wan.freq_dim, timestep.flatten()).to(dtype=x.dtype))
        e = e.reshape(timestep.shape[0], -1, e.shape[-1])
        e0 = wan.time_projection(e).unflatten(2, (6, wan.dim))
        context = wan.text_embedding(context)
        context_img_len = None
        if clip_fea is not None:  # CLIP-vision tokens first, as the stock forward does
            if wan.img_emb is not None:
                context = torch.cat([wan.img_emb(clip_fea), context], dim=1)
            context_img_len = clip_fea.shape[-2]
        rope = self._rope(wan, ctx, x.dtype, grid_hw)
        e_key = e0_key = e0_buf = None
        if not ctx.recording:
            e_key, e0_key, e0_buf = e, e0, e0
            if _per_frame_timesteps(timestep):  # each keyframe row keeps its own frame's timestep
                e_key, e0_key = e.index_select(1, ctx.key_frames), e0.index_select(1, ctx.key_frames)
                e0_buf = e0.index_select(1, rope["buf_frames"])
        cross = (context, context_img_len)
        if ctx.group is not None:
            out = self._sharded(wan, ctx, x, e0, rope, cross)
        elif ctx.recording:
            out = _WanBlocks(ctx, {ALL: e0}, rope, cross).record(wan.blocks, self._embed(wan, x))
        else:   # only the keyframes are embedded (and padded): no full-size copy of the latent
            blocks = _WanBlocks(ctx, {KEY: e0_key, BUF: e0_buf}, rope, cross)
            out = blocks.active(wan.blocks, self._embed(wan, x.index_select(2, ctx.key_frames)))
        if ctx.recording:
            return wan.unpatchify(wan.head(out, e), (frames,) + grid_hw)[:, :, :frames, :h, :w]
        out = wan.unpatchify(wan.head(out, e_key), (ctx.key_frames.numel(),) + grid_hw)[:, :, :, :h, :w]
        return scatter_keyframes(out, ctx)

    def _sharded(self, wan, ctx, x, e0, rope, cross):
        """The blocks under Ulysses (docs/multi_gpu.md §4): this rank's share of the pass's query rows, each
        with its own RoPE row and its own frame's modulation (per_frame 1: vectors already one per row)."""
        rows = torch.arange(ctx.frames * ctx.per_frame, device=x.device) if ctx.recording else ctx.key_rows   # in order
        mine = ctx.group.shard(rows.numel(), rows.device)
        e0_mine = e0 if e0.shape[1] == 1 else e0.index_select(1, rows[mine] // ctx.per_frame)
        blocks = _WanBlocks(ctx, {MINE: e0_mine}, {MINE: rope[ALL][:, rows[mine]]}, cross, per_frame=1)
        tokens = self._embed(wan, x if ctx.recording else x.index_select(2, ctx.key_frames))
        return blocks.sharded(wan.blocks, tokens.index_select(1, mine), rows.numel())

    def bypassed_modules(self, wan):
        for i, block in enumerate(wan.blocks):
            block = compat.compiled_module(block)[0]
            yield f"blocks.{i}", block
            yield f"blocks.{i}.self_attn", block.self_attn   # its q / k / v / o and norms are called, not its forward

    @staticmethod
    def _rope(wan, ctx, dtype, grid_hw) -> dict:
        """RoPE rows of this run's keyframe set (all rows, query rows, cached-buffer rows), built once per run and device."""
        device = ctx.key_rows.device

        def build():
            freqs = wan.rope_encode(ctx.frames, grid_hw[0] * wan.patch_size[1], grid_hw[1] * wan.patch_size[2],
                                    device=device, dtype=dtype, transformer_options=ctx.to)
            nonkey = sorted(set(range(ctx.frames)) - set(ctx.keyframes))
            rope = {ALL: freqs, KEY: freqs[:, ctx.key_rows[:ctx.scratch]],   # the keyframes (a partial pass adds its own)
                    "buf_frames": torch.as_tensor(list(ctx.keyframes) + nonkey, dtype=torch.long, device=device)}
            if ctx.mode == ContextMode.HIDDEN_CACHE:  # cached buffers' rows: keyframes first, then non-keyframes
                rope[BUF] = torch.cat([rope[KEY], freqs[:, ctx.nk_rows]], dim=1)
            return rope

        rope = ctx.run.row_index(("wan-rope", ctx.frames, grid_hw, ctx.keyframes, dtype), build, device)
        if ctx.refresh:   # a partial pass's queries change from pass to pass: their rows are not memoised
            rope = {**rope, KEY: rope[ALL][:, ctx.key_rows]}
        return rope

    @staticmethod
    def _embed(wan, x):
        if x.shape[3] % wan.patch_size[1] or x.shape[4] % wan.patch_size[2]:
            x = pad_to_patch_size(x, wan.patch_size)   # copies, so only when the size needs it
        t = wan.patch_embedding(x.float()).to(x.dtype)
        return t.flatten(2).transpose(1, 2)



class _WanBlocks(SingleStreamBlocks):
    """WanAttentionBlock's math (comfy/ldm/wan/model.py) by module calls, for the shared passes."""

    def __init__(self, ctx, e0: dict, rope: dict, cross: tuple, per_frame: int | None = None):
        super().__init__(ctx)
        self.e0, self.rope, self.cross = e0, rope, cross
        self.per_frame = ctx.per_frame if per_frame is None else per_frame

    def modulation(self, block, rows, like):
        # e0: [B, 1 or F, 6, D] -> six [B, 1 or F, D] vectors, as WanAttentionBlock does for 4-D e.
        return (compat.cast_to(block.modulation, like.dtype, like.device).unsqueeze(0) + self.e0[rows]).unbind(2)

    def modulate(self, block, x, mod):
        return torch.addcmul(_rows(mod[0], self.per_frame), block.norm1(x), 1 + _rows(mod[1], self.per_frame))

    def q(self, block, y, rows):
        attn, (b, n, _) = block.self_attn, y.shape
        return compat.apply_rope1(attn.norm_q(attn.q(y)).view(b, n, attn.num_heads, attn.head_dim), self.rope[rows]).view(b, n, -1)

    def kv(self, block, y, rows):
        attn, (b, n, _) = block.self_attn, y.shape
        k = attn.norm_k(attn.k(y)).view(b, n, attn.num_heads, attn.head_dim)
        return compat.apply_rope1(k, self.rope[rows]).view(b, n, -1), attn.v(y)

    def finish(self, block, x, q, k, v, mod):
        return self.rest(block, x, self.attend(block, q, k, v, block.self_attn.num_heads), mod)

    def heads(self, block):
        return block.self_attn.num_heads, block.self_attn.head_dim

    def attend(self, block, q, k, v, heads):
        return compat.attention(q, k, v, heads=heads, transformer_options=self.ctx.to)

    def rest(self, block, x, y, mod):
        (context, context_img_len), p, to = self.cross, self.per_frame, self.ctx.to
        x = torch.addcmul(x, block.self_attn.o(y), _rows(mod[2], p))
        x = x + block.cross_attn(block.norm3(x), context, context_img_len=context_img_len, transformer_options=to)
        y = block.ffn(torch.addcmul(_rows(mod[3], p), block.norm2(x), 1 + _rows(mod[4], p)))
        return torch.addcmul(x, y, _rows(mod[5], p))
