"""RhymeFlowKSampler: KSampler's inputs plus the RhymeFlow settings, in one node (MODEL ... -> LATENT)."""
from __future__ import annotations

import comfy.samplers

from ..rhymeflow_core.all_in_one import sample_latent
from ..rhymeflow_core.cache import CACHE_DEVICES
from ..rhymeflow_core.compat import v3_api
from ..rhymeflow_core.presets import DEFAULT_PRESET
from ..rhymeflow_core.run_state import CONTEXT_MODES
from ..rhymeflow_core.solvers import SOLVERS
from .sampler import sampler_settings, schedule_inputs

_, io = v3_api()


class RhymeFlowKSamplerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowKSampler",
            display_name="RhymeFlow KSampler (faster video sampling)",
            category="sampling/rhymeflow",
            description="KSampler for video models with RhymeFlow built in (arXiv 2606.06309): same inputs and noise as "
                        "KSampler plus the RhymeFlow settings, about half the model compute at preset balanced, no "
                        "retraining and no other RhymeFlow node needed. Wan 2.1 / 2.2 (text- or image-to-video), "
                        "HunyuanVideo, LTX-Video.",
            inputs=[
                io.Model.Input("model", tooltip="A video model: Wan 2.1 / 2.2 (T2V, I2V, FLF2V, TI2V-5B), HunyuanVideo or LTX-Video "
                                               "(after ModelSamplingSD3, LoRAs ...)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The random seed used for creating the noise (same noise as KSampler)."),
                io.Int.Input("steps", default=30, min=1, max=10000, tooltip="Sampling steps. RhymeFlow pays off from about 20 steps."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (Wan: 5-6)."),
                io.Combo.Input("sampler_name", options=list(SOLVERS), default="uni_pc",
                               tooltip="Solver for keyframes (and all frames during warm-up); identical to ComfyUI's sampler "
                                       "of the same name. Non-keyframes take one Euler jump per group."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="simple",
                               tooltip="How the noise levels are spaced, as in KSampler (Wan: simple)."),
                io.Conditioning.Input("positive", tooltip="What the video should show."),
                io.Conditioning.Input("negative", tooltip="What the video should not show."),
                io.Latent.Input("latent_image", tooltip="A video latent, e.g. EmptyHunyuanLatentVideo."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Amount of denoising, as in KSampler: below 1 the last steps of a longer schedule run."),
                io.Combo.Input("context", options=list(CONTEXT_MODES), default="kv_cache",
                               tooltip="kv_cache: non-keyframes' keys/values cached at each full pass (fastest); hidden_cache: "
                                       "their block inputs (as the reference code); keyframe_only: the paper's ablation."),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="auto",
                               tooltip="Where the cache lives: auto (GPU if it fits, else CPU RAM), gpu, cpu."),
                *schedule_inputs(preset_default=DEFAULT_PRESET),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent; decode it with VAEDecode.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                context, cache_device, warmup_steps, min_stride, max_stride, transition_1, transition_2, stride_schedule,
                preset=DEFAULT_PRESET, keyframes=None, refresh_budget=0.0) -> io.NodeOutput:
        settings = sampler_settings(sampler_name, warmup_steps, min_stride, max_stride, transition_1, transition_2,
                                    stride_schedule, keyframes, refresh_budget)
        return io.NodeOutput(sample_latent(model, seed, steps, cfg, scheduler, positive, negative, latent_image, denoise,
                                           settings, preset, context, cache_device, source=cls.hidden.unique_id))
