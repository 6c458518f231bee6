"""Active passes for ComfyUI's WanModel: Wan 2.1 T2V / I2V / FLF2V, Wan 2.2 A14B T2V / I2V, Wan 2.2 TI2V-5B.

Spec §4. Tokens are frame-major, P = H'·W' rows per latent frame. In an ACTIVE pass only the
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

from .. import compat
from ..errors import RhymeFlowInputError
from ..keyframes import conditioned_frames
from ..run_state import RECORD
from .base import ActivePassAdapter


def _frame_rows(frames, per_frame: int, device) -> torch.Tensor:
    return (torch.as_tensor(frames, dtype=torch.long, device=device)[:, None] * per_frame
            + torch.arange(per_frame, device=device)[None]).reshape(-1)


def _rows(v, per_frame: int):
    """A modulation vector [B, 1, D] (one timestep) or [B, F, D] (one per frame, rows frame-major)."""
    return v if v.shape[1] == 1 else v.repeat_interleave(per_frame, dim=1)


class WanAdapter(ActivePassAdapter):
    name = "wan"
    supported = ("Wan 2.1 T2V / I2V / FLF2V, Wan 2.2 A14B T2V / I2V experts and Wan 2.2 TI2V-5B "
                 "(ComfyUI WanModel)")

    @classmethod
    def matches(cls, diffusion_model) -> bool:
        # Exact class: VACE, Camera, S2V, ... subclasses run their own forward_orig.
        return type(diffusion_model) is wan_model.WanModel

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

    # ---- entry -------------------------------------------------------------------------------
    def forward(self, wan, run, to, args, kwargs):
        x, timestep, context = args[0], args[1], args[2]
        clip_fea = args[3] if len(args) > 3 else kwargs.get("clip_fea")
        time_dim_concat = args[4] if len(args) > 4 else kwargs.get("time_dim_concat")
        b, _, frames, h, w = x.shape
        if time_dim_concat is not None or kwargs.get("context_latents") is not None:
            raise RhymeFlowInputError("reference frames appended along time (time_dim_concat / context_latents, e.g. Phantom "
                                      "subject-to-video) are not supported in RhymeFlow passes; sample this workflow without RhymeFlow.")
        per_frame_t = timestep.ndim > 1 and timestep.shape[1] > 1
        if per_frame_t and timestep.shape[1] != frames:
            raise RhymeFlowInputError(f"per-token timesteps ({timestep.shape[1]} for {frames} latent frames) are not supported "
                                      "in Wan RhymeFlow passes; only one timestep per latent frame (TI2V-5B's denoise mask).")
        if to.get("patches_replace", {}).get("dit") and not run.memo.get("warned_block_patches"):
            run.memo["warned_block_patches"] = True
            compat.log.warning("RhymeFlow: block-replace patches (e.g. skip-layer guidance) apply only in warm-up passes, "
                               "not in rhythmic or active passes.")
        ph, pw = wan.patch_size[1], wan.patch_size[2]
        grid_hw = (-(-h // ph), -(-w // pw))
        per_frame = grid_hw[0] * grid_hw[1]
        run.calls[run.plan.kind] += 1

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
        cross = (context, context_img_len)
        signature = tuple(to.get("uuids") or ("single",))
        idx = self._indices(wan, run, to, x.device, x.dtype, frames, grid_hw)

        if run.plan.kind == RECORD:
            tokens = self._embed(wan, x)
            out = self._record_pass(wan, run, tokens, e0, idx["freqs"], cross, to, idx["nk_rows"], signature, per_frame)
            out = wan.unpatchify(wan.head(out, e), (frames,) + grid_hw)
        else:
            # Only the keyframes are embedded (and padded): no full-size copy of the latent.
            tokens = self._embed(wan, x.index_select(2, idx["key_frames"]))
            cached = idx["nk_rows"].numel() > 0 and run.config.context != "keyframe_only"
            freqs_buf = idx.get("freqs_buf") if cached else None
            e_key, e0_key, e0_buf = e, e0, e0
            if per_frame_t:  # each keyframe row keeps its own frame's timestep
                e_key, e0_key = e.index_select(1, idx["key_frames"]), e0.index_select(1, idx["key_frames"])
                e0_buf = e0.index_select(1, idx["buf_frames"])
            out = self._active_pass(wan, run, tokens, (e0_key, e0_buf), idx["freqs_key"], freqs_buf, cross, to, signature,
                                    cached, per_frame)
            out = wan.unpatchify(wan.head(out, e_key), (idx["key_frames"].numel(),) + grid_hw)
            full = out.new_zeros((b, out.shape[1], frames) + out.shape[3:])
            out = full.index_copy_(2, idx["key_frames"], out)
        return out[:, :, :frames, :h, :w]

    @staticmethod
    def _indices(wan, run, to, device, dtype, frames, grid_hw) -> dict:
        """Index tensors and RoPE rows of this run's keyframe set, built once per run and device."""
        keyframes = run.plan.keyframes
        per_frame = grid_hw[0] * grid_hw[1]

        def build():
            nonkey = sorted(set(range(frames)) - set(keyframes))
            freqs = wan.rope_encode(frames, grid_hw[0] * wan.patch_size[1], grid_hw[1] * wan.patch_size[2],
                                    device=device, dtype=dtype, transformer_options=to)
            key_rows = _frame_rows(keyframes, per_frame, device)
            nk_rows = _frame_rows(nonkey, per_frame, device)
            idx = {"key_frames": torch.as_tensor(keyframes, dtype=torch.long, device=device), "nk_rows": nk_rows,
                   "freqs": freqs, "freqs_key": freqs[:, key_rows],
                   "buf_frames": torch.as_tensor(list(keyframes) + nonkey, dtype=torch.long, device=device)}
            if run.config.context == "hidden_cache":
                # Rows of the cached buffers are ordered keyframes first, then non-keyframes.
                idx["freqs_buf"] = torch.cat([idx["freqs_key"], freqs[:, nk_rows]], dim=1)
            return idx

        return run.row_index(("wan", frames, grid_hw, keyframes, dtype), build, device)

    @staticmethod
    def _embed(wan, x):
        if x.shape[3] % wan.patch_size[1] or x.shape[4] % wan.patch_size[2]:
            x = pad_to_patch_size(x, wan.patch_size)   # copies, so only when the size needs it
        t = wan.patch_embedding(x.float()).to(x.dtype)
        return t.flatten(2).transpose(1, 2)

    @staticmethod
    def _modulation(block, e0, like):
        # e0: [B, 1 or F, 6, D] -> six [B, 1 or F, D] vectors, as WanAttentionBlock does for 4-D e.
        return (compat.cast_to(block.modulation, like.dtype, like.device).unsqueeze(0) + e0).unbind(2)

    @staticmethod
    def _q(attn, y, freqs):
        b, rows, _ = y.shape
        return compat.apply_rope1(attn.norm_q(attn.q(y)).view(b, rows, attn.num_heads, attn.head_dim), freqs).view(b, rows, -1)

    @staticmethod
    def _kv(attn, y, freqs):
        b, rows, _ = y.shape
        k = compat.apply_rope1(attn.norm_k(attn.k(y)).view(b, rows, attn.num_heads, attn.head_dim), freqs).view(b, rows, -1)
        return k, attn.v(y)

    @staticmethod
    def _modulate(block, x, mod, per_frame):
        return torch.addcmul(_rows(mod[0], per_frame), block.norm1(x), 1 + _rows(mod[1], per_frame))

    @staticmethod
    def _finish_block(block, x, y, mod, cross, to, per_frame):
        context, context_img_len = cross
        x = torch.addcmul(x, y, _rows(mod[2], per_frame))
        x = x + block.cross_attn(block.norm3(x), context, context_img_len=context_img_len, transformer_options=to)
        y = block.ffn(torch.addcmul(_rows(mod[3], per_frame), block.norm2(x), 1 + _rows(mod[4], per_frame)))
        return torch.addcmul(x, y, _rows(mod[5], per_frame))

    def _record_pass(self, wan, run, x, e0, freqs, cross, to, nk_rows, signature, per_frame):
        """A full pass that also records what the next active passes need of the non-keyframes."""
        b, length, dim = x.shape
        a = length - nk_rows.numel()
        mode = run.config.context if nk_rows.numel() else "keyframe_only"
        if mode != "keyframe_only":
            per_block = 2 * b * length * dim * x.element_size() if mode == "kv_cache" else b * length * dim * x.element_size()
            run.cache.choose_device(x.device, per_block * len(wan.blocks))
        for i, block in enumerate(wan.blocks):
            to["block_index"] = i
            mod = self._modulation(block, e0, x)
            if mode == "hidden_cache":
                run.cache.store(signature, i, (x,), nk_rows, scratch=a)
            x = x.contiguous()
            y = self._modulate(block, x, mod, per_frame)
            q = self._q(block.self_attn, y, freqs)
            k, v = self._kv(block.self_attn, y, freqs)
            if mode == "kv_cache":
                run.cache.store(signature, i, (k, v), nk_rows, scratch=a)
            y = block.self_attn.o(compat.attention(q, k, v, heads=block.self_attn.num_heads, transformer_options=to))
            x = self._finish_block(block, x, y, mod, cross, to, per_frame)
        return x

    def _active_pass(self, wan, run, x, e0s, freqs_key, freqs_all, cross, to, signature, cached, per_frame):
        a = x.shape[1]
        mode = run.config.context
        e0_key, e0_buf = e0s  # keyframe rows; cached buffer rows (keyframes first, then non-keyframes)
        for i, block in enumerate(wan.blocks):
            to["block_index"] = i
            mod = self._modulation(block, e0_key, x)
            attn = block.self_attn
            x = x.contiguous()
            if cached and mode == "hidden_cache":
                (hidden,) = run.cache.load(signature, i, x.device)
                hidden[:, :a] = x
                # Stale non-keyframe hidden states, re-modulated with the current timestep(s).
                y_all = self._modulate(block, hidden, self._modulation(block, e0_buf, x) if e0_buf is not e0_key else mod,
                                       per_frame)
                q = self._q(attn, y_all[:, :a], freqs_key)
                k, v = self._kv(attn, y_all, freqs_all)
            else:
                y = self._modulate(block, x, mod, per_frame)
                q = self._q(attn, y, freqs_key)
                k, v = self._kv(attn, y, freqs_key)
                if cached:  # kv_cache: fresh keyframe K/V into the scratch rows of the cached buffers
                    k_buf, v_buf = run.cache.load(signature, i, x.device)
                    k_buf[:, :a] = k
                    v_buf[:, :a] = v
                    k, v = k_buf, v_buf
            y = attn.o(compat.attention(q, k, v, heads=attn.num_heads, transformer_options=to))
            x = self._finish_block(block, x, y, mod, cross, to, per_frame)
        return x
