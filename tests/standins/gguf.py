"""A stand-in for ComfyUI-GGUF's dequantize-on-the-fly layers: the hook they install, not the GGUF format.

Read, not copied: city96/ComfyUI-GGUF at commit 795e451 (2025-12-18).

* nodes.py, `UnetLoaderGGUF.load_unet` (lines 149-176): builds `ops = GGMLOps()` and loads the
  state dict with `comfy.sd.load_diffusion_model_state_dict(sd, model_options={"custom_operations": ops})`.
* ops.py, `GGMLLayer` / `GGMLOps` (lines 93-245): a `comfy.ops.manual_cast` subclass whose layers
  have `comfy_cast_weights = True`, keep the quantized tensor as the parameter
  (`ggml_load_from_state_dict` assigns it instead of copying), and dequantize in
  `cast_bias_weight` on every forward (`dequantize_tensor`, then any LoRA patches).

The stand-in keeps that hook (custom_operations; a manual_cast Linear that stores block-quantized
weights and dequantizes them in every forward) with its own simple formats: GGML's "_0" types in
spirit (blocks of 32 input weights, one fp16 scale per block, signed `bits`-bit codes; Q8_0, Q5_0
and Q4_0-like), with the codes kept unpacked in an int8 tensor. Only Linear layers are quantized.
"""
from __future__ import annotations

import comfy.ops
import comfy.sd
import torch

BLOCK = 32


def quantize(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes [out, in], fp16 scales [out, in / 32]) of a 2-D weight, symmetric per block."""
    levels = 2 ** (bits - 1) - 1
    blocks = weight.float().unflatten(1, (-1, BLOCK))
    scales = (blocks.abs().amax(-1) / levels).clamp_min(1e-12).half()
    codes = (blocks / scales.float().unsqueeze(-1)).round().clamp(-levels - 1, levels).to(torch.int8)
    return codes.flatten(1), scales


def dequantize(codes: torch.Tensor, scales: torch.Tensor, dtype) -> torch.Tensor:
    return (codes.unflatten(1, (-1, BLOCK)).float() * scales.float().unsqueeze(-1)).flatten(1).to(dtype)


def block_quant_ops(bits: int):
    """The custom_operations class for `bits`-bit weights (what GGMLOps is to ComfyUI-GGUF)."""

    class BlockQuantOps(comfy.ops.manual_cast):
        class Linear(comfy.ops.manual_cast.Linear):
            comfy_cast_weights = True
            dequantized = 0   # forwards that dequantized a weight (class-wide), for tests

            def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
                weight, bias = state_dict.get(prefix + "weight"), state_dict.get(prefix + "bias")
                if weight is None or weight.shape[1] % BLOCK:
                    return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
                codes, scales = quantize(weight, bits)   # GGUF's loader hands over quantized tensors; we quantize here
                self.weight = torch.nn.Parameter(codes, requires_grad=False)
                self.register_buffer("block_scales", scales, persistent=False)
                self.bias = None if bias is None else torch.nn.Parameter(bias.float(), requires_grad=False)

            def forward_comfy_cast_weights(self, input, *args, **kwargs):
                if self.weight.dtype != torch.int8:
                    return super().forward_comfy_cast_weights(input, *args, **kwargs)
                type(self).dequantized += 1
                weight = dequantize(self.weight.to(input.device), self.block_scales.to(input.device), input.dtype)
                bias = None if self.bias is None else self.bias.to(input.device, input.dtype)
                return torch.nn.functional.linear(input, weight, bias)

    BlockQuantOps.bits = bits
    return BlockQuantOps


def load_block_quantized(state_dict: dict, bits: int):
    """A MODEL as UnetLoaderGGUF builds it: ComfyUI's loader with the stand-in ops as custom_operations."""
    return comfy.sd.load_diffusion_model_state_dict(dict(state_dict), model_options={"custom_operations": block_quant_ops(bits)})
