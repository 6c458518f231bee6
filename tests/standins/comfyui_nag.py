"""A stand-in for ComfyUI-NAG's guider hook on Wan: the diffusion model's `forward` replaced for the run.

Read, not copied: ChenDarYen/ComfyUI-NAG at commit ef8a641 (2025-11-03).

* samplers.py, `NAGCFGGuider.sample` (lines 132-215): a CFGGuider subclass; for a `WanModel` it
  builds `NAGWanModelSwitch(model, ...)` and calls `switcher.set_nag()` before the OUTER_SAMPLE
  wrappers run, and `switcher.set_origin()` after.
* wan/model.py, `NAGWanModelSwitch.set_nag` (lines 705-720): `self.model.forward = MethodType(partial(
  NAGWanModel.forward, nag_negative_context=..., nag_sigma_end=...), self.model)`, an instance
  attribute that shadows `WanModel.forward`.
* wan/model.py, `NAGWanModel.forward` (lines 352-430): builds the RoPE table itself and calls
  `self.forward_orig(...)` directly. `WanModel.forward`, which runs the DIFFUSION_MODEL wrappers
  (comfy/ldm/wan/model.py in 0.3.75), is never called while the guider samples.

The stand-in keeps exactly that: during `sample` the diffusion model's `forward` is an instance
attribute calling the stock `WanModel._forward` (the computation without the wrapper executor), so
the result is the stock model's. The attention guidance itself is left out: it changes values, not
which hooks run (tests/standins/kjnodes_patches.py has KJNodes' NAG, which composes).
"""
from __future__ import annotations

from types import MethodType

import comfy.samplers
from comfy.ldm.wan.model import WanModel


class NAGGuiderStandIn(comfy.samplers.CFGGuider):
    def sample(self, *args, **kwargs):
        dm = self.model_patcher.model.diffusion_model
        dm.forward = MethodType(WanModel._forward, dm)   # set_nag(): shadows WanModel.forward
        try:
            return super().sample(*args, **kwargs)
        finally:
            del dm.forward                               # set_origin()
