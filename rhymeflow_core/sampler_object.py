"""The SAMPLER object handed to SamplerCustomAdvanced (and used by the all-in-one node), and the
checks run before sampling."""
from __future__ import annotations

from dataclasses import replace

import comfy.samplers

from .errors import RhymeFlowInputError
from .presets import CUSTOM, resolve_schedule
from .sampling_loop import SamplerSettings, check_inputs, find_run, sample_rhymeflow


def settings_for_steps(settings: SamplerSettings, preset: str, steps: int) -> SamplerSettings:
    """The settings a run of `steps` steps uses: a preset's schedule is known only once the sigmas are."""
    return replace(settings, schedule=resolve_schedule(preset, settings.schedule, steps))


class RhymeFlowSamplerObject(comfy.samplers.KSAMPLER):
    """A KSAMPLER that carries its settings where the OUTER_SAMPLE wrapper can check them early.

    `source` (e.g. the node's unique id) is copied into the run report, so an observer can tell
    which node's run it was (the schedule view shows it on that node).
    """

    def __init__(self, settings: SamplerSettings, preset: str = CUSTOM, source: str | None = None):
        resolve_schedule(preset, settings.schedule, 50)  # an unknown preset fails now, not at sampling time
        super().__init__(_sample, extra_options={"settings": settings, "preset": preset, "source": source})
        self.settings = settings
        self.preset = preset

    def settings_for(self, steps: int) -> SamplerSettings:
        return settings_for_steps(self.settings, self.preset, steps)


def _sample(model, x, sigmas, extra_args=None, callback=None, disable=None, settings: SamplerSettings = None,
            preset: str = CUSTOM, source: str | None = None):
    """KSAMPLER's sampler function: resolve the preset for this many steps, then sample."""
    report = find_run(extra_args or {}).report
    report.preset, report.source = preset, source
    settings = settings_for_steps(settings or SamplerSettings(), preset, len(sigmas) - 1)
    return sample_rhymeflow(model, x, sigmas, extra_args, callback, disable, settings=settings)


def early_check(args: tuple, kwargs: dict, diffusion_model=None) -> None:
    """OUTER_SAMPLE arguments: (noise, latent_image, sampler, sigmas, ...)."""
    sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
    sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
    latent = args[1] if len(args) > 1 else kwargs.get("latent_image")
    if not isinstance(sampler, RhymeFlowSamplerObject):
        return
    if diffusion_model is not None and "forward" in vars(diffusion_model):
        # The class's forward runs the DIFFUSION_MODEL wrappers; an instance attribute shadowing it (ComfyUI-NAG's
        # NAGCFGGuider sets one for the run: tests/standins/comfyui_nag.py) means no recording or active pass could run.
        raise RhymeFlowInputError(
            f"something replaced this {type(diffusion_model).__name__}'s forward for the run (e.g. ComfyUI-NAG's NAG guider), "
            "so RhymeFlow's passes cannot run. Use CFGGuider (for NAG on Wan: KJNodes' WanVideoNAG), or a normal sampler.")
    if sigmas is not None and latent is not None:
        check_inputs(sampler.settings_for(len(sigmas) - 1), latent.shape, sigmas)
