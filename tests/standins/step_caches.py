"""Stand-ins for TeaCache and MagCache: the hook each pack installs, with a fixed skip rule.

Both packs install the same hook (read, not copied):

* welltop-cn/ComfyUI-TeaCache, nodes.py (commit 3657f7f), `TeaCache.apply_teacache`: puts its
  settings into `model_options["transformer_options"]` (`rel_l1_thresh`, `coefficients`,
  `use_ret_mode`) and calls `set_model_unet_function_wrapper(unet_wrapper_function)`. That function
  finds the step index by matching the timestep in `transformer_options["sample_sigmas"]`, sets
  `c["transformer_options"]["enable_teacache"]` to `start_percent <= step / steps <= end_percent`,
  and runs the model inside `unittest.mock.patch.multiple(diffusion_model, forward_orig=...)`. Its
  `teacache_wanmodel_forward` reuses the cached residual instead of the blocks when its distance
  rule says so and `enable_teacache` is true.
* Zehong-Ma/ComfyUI-MagCache, nodes.py, `MagCache.apply_magcache`: the same hook, settings
  `magcache_thresh`, `retention_ratio`, `mag_ratios`, `magcache_K`; `enable_magcache` is
  `step >= int(steps * retention_ratio)`.

The stand-ins keep the hook (settings keys, model-function wrapper, the patched `forward_orig`, the
per-call flag) and replace the packs' distance / magnitude rules with a fixed one: with the flag on,
every second call per cond branch reuses the last computed output. `skips` lists (step, branch) of
each reuse, so a test sees exactly which passes a cache replaced. Use a fresh stand-in per run.
"""
from __future__ import annotations

from unittest.mock import patch


class _ForwardOrigCache:
    flag = ""
    settings: dict = {}

    def __init__(self):
        self.skips: list[tuple[int, int]] = []
        self._last: dict = {}   # cond_or_uncond tuple -> (computed last time, output)

    def enabled(self, step: int, steps: int) -> bool:
        raise NotImplementedError

    def apply(self, model):
        m = model.clone()
        m.model_options.setdefault("transformer_options", {}).update(self.settings)
        dm = m.get_model_object("diffusion_model")
        stock = type(dm).forward_orig

        def forward_orig(dm_self, *args, **kwargs):
            to = kwargs.get("transformer_options", {})
            key, step = tuple(to.get("cond_or_uncond", ())), to.get("stand_in_step", -1)
            computed, out = self._last.get(key, (False, None))
            if to.get(self.flag, False) and computed and out is not None:
                self._last[key] = (False, out)
                self.skips.append((step, key))
                return out.clone()
            out = stock(dm_self, *args, **kwargs)
            self._last[key] = (True, out.clone())
            return out

        def unet_wrapper(model_function, kw):
            c = kw["c"]
            to = c["transformer_options"]
            sigmas = to["sample_sigmas"]
            match = (sigmas == kw["timestep"][0]).nonzero()
            step = int(match[0]) if len(match) else 0
            to[self.flag] = self.enabled(step, len(sigmas) - 1)
            to["stand_in_step"] = step
            with patch.multiple(dm, forward_orig=forward_orig.__get__(dm, type(dm))):
                return model_function(kw["input"], kw["timestep"], **c)

        m.set_model_unet_function_wrapper(unet_wrapper)
        return m


class TeaCacheStandIn(_ForwardOrigCache):
    flag = "enable_teacache"

    def __init__(self, start_percent: float = 0.0, end_percent: float = 1.0):
        super().__init__()
        self.start, self.end = start_percent, end_percent
        self.settings = {"rel_l1_thresh": 0.4, "coefficients": [0.0, 0.0, 0.0, 1.0, 0.0], "use_ret_mode": False}

    def enabled(self, step: int, steps: int) -> bool:
        return self.start <= step / steps <= self.end


class MagCacheStandIn(_ForwardOrigCache):
    flag = "enable_magcache"

    def __init__(self, retention_ratio: float = 0.2, last_step: int | None = None):
        super().__init__()
        self.last_step = last_step   # the stand-in's own end (MagCache has none): for the dense reference
        self.settings = {"magcache_thresh": 0.24, "retention_ratio": retention_ratio, "mag_ratios": [1.0] * 100,
                         "magcache_K": 4}

    def enabled(self, step: int, steps: int) -> bool:
        after_start = step >= int(steps * self.settings["retention_ratio"])
        return after_start and (self.last_step is None or step <= self.last_step)
