"""The README's "Works with" rows, each composed with RhymeFlow on the tiny real Wan (issue 14).

Every row is checked for three things (docs/compatibility.md §7):
(a) with every frame a keyframe, RhymeFlow + the node reproduces ComfyUI's sampler + the same node;
(b) the node acts inside recording / active passes: an active pass on a fresh cache equals the
    patched model's own forward on the keyframe rows (and differs from the unpatched model's), or,
    for sampling-level nodes, the node's effect is seen in the active steps;
(c) with sparse keyframes the schedule's passes all run, counted by the run report and inside the model.
Nodes are the host's own (LoraLoaderModelOnly, UNETLoader, ModelSamplingSD3, CFGNorm, ScaleROPE) or
stand-ins for a pack's hook (tests/standins/kjnodes_patches.py, tests/standins/gguf.py).
Two Wan 2.2 experts: tests/test_sampler.py::test_two_expert_split_is_a_synchronisation_point.
ComfyUI-NAG's guider cannot compose and is refused before sampling (at the end; tests/standins/comfyui_nag.py).
"""
from __future__ import annotations

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import nodes
import pytest
import torch
from comfy_extras.nodes_cfg import CFGNorm
from comfy_extras.nodes_model_advanced import ModelSamplingSD3
from comfy_extras.nodes_rope import ScaleROPE
from standins.comfyui_nag import NAGGuiderStandIn
from standins.gguf import load_block_quantized
from standins.kjnodes_patches import RifleXRoPEStandIn, SageAttentionStandIn, WanNAGStandIn

from helpers import PassProbe, conds, key_err, last_report, latent_and_noise, patched, rel_err, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core.adapters import adapter_for
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.run_state import ACTIVE, KEY, RECORD, ProjectionConfig, RhymeFlowRun
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from tools.tiny_models import WAN_TEXT_DIM, random_state_dict

FRAMES, SIZE, STEPS, WARMUP = 5, 8, 10, 3
SCHEDULE = build_schedule(STEPS, ScheduleSettings(WARMUP, 2, 3))
KEYFRAMES = (0, 2)
SEED = 5   # this file's own tiny Wan: weight and object patches loaded onto it never reach other files' models
ORDERS = {"node_first": lambda node, m: patched(node(m)), "projection_first": lambda node, m: node(patched(m))}


@pytest.fixture(autouse=True)
def _unpatch_models():
    yield
    comfy.model_management.unload_all_models()   # restores weights and object patches of whatever was loaded


# ---- model files, loaded by the host's own loader nodes -----------------------------------------------

def lora_state_dict(style: str) -> dict:
    """A rank-4 LoRA for the tiny Wan in one of the key formats comfy/lora.py accepts."""
    g = torch.Generator().manual_seed(11)
    sd = {}
    for i, layer in [(0, "self_attn.q"), (0, "cross_attn.k"), (1, "ffn.0"), (1, "self_attn.o")]:
        out_dim, in_dim = (256, 128) if layer == "ffn.0" else (128, 128)
        down, up = torch.randn(4, in_dim, generator=g) * 0.3, torch.randn(out_dim, 4, generator=g) * 0.3
        if style == "wan":      # diffusers / Wan trainers (musubi, diffsynth): lora_A / lora_B
            sd[f"diffusion_model.blocks.{i}.{layer}.lora_A.weight"], sd[f"diffusion_model.blocks.{i}.{layer}.lora_B.weight"] = down, up
        elif style == "kohya":  # lora_unet_ keys with lora_down / lora_up and an alpha
            key = f"lora_unet_blocks_{i}_{layer.replace('.', '_')}"
            sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"], sd[f"{key}.alpha"] = down, up, torch.tensor(2.0)
        else:                   # lightx2v-style: lora_down / lora_up plus full .diff / .diff_b tensors
            sd[f"diffusion_model.blocks.{i}.{layer}.lora_down.weight"], sd[f"diffusion_model.blocks.{i}.{layer}.lora_up.weight"] = down, up
    if style == "lightx2v":
        sd["diffusion_model.blocks.0.norm3.diff"] = torch.randn(128, generator=g) * 0.2
        sd["diffusion_model.blocks.1.self_attn.o.diff_b"] = torch.randn(128, generator=g) * 0.2
        sd["diffusion_model.blocks.1.modulation.diff"] = torch.randn(1, 6, 128, generator=g) * 0.2   # a raw parameter
    return sd


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny Wan as a diffusion_models file and the LoRAs as loras files, in folders the host searches."""
    root = tmp_path_factory.mktemp("models")
    for folder in ("diffusion_models", "loras"):
        (root / folder).mkdir()
        folder_paths.add_model_folder_path(folder, str(root / folder))
    comfy.utils.save_torch_file(random_state_dict("wan", seed=SEED), str(root / "diffusion_models" / "tiny_wan.safetensors"))
    for style in ("wan", "kohya", "lightx2v"):
        comfy.utils.save_torch_file(lora_state_dict(style), str(root / "loras" / f"tiny_{style}.safetensors"))
    return root


def lora(style):
    return lambda m: nodes.LoraLoaderModelOnly().load_lora_model_only(m, f"tiny_{style}.safetensors", 1.0)[0]


def base():
    return tiny_model(seed=SEED)


def negative():
    return torch.randn(1, 6, WAN_TEXT_DIM, generator=torch.Generator().manual_seed(9)) * 0.5


# Rows whose node patches a loaded model: name -> (the MODEL without the node, the node).
MODEL_ROWS = {
    "lora-wan": lambda: (base(), lora("wan")),
    "lora-kohya": lambda: (base(), lora("kohya")),
    "lora-lightx2v": lambda: (base(), lora("lightx2v")),
    "fp8": lambda: (base(), lambda _m: nodes.UNETLoader().load_unet("tiny_wan.safetensors", "fp8_e4m3fn")[0]),
    "gguf-q8": lambda: (base(), lambda _m: load_block_quantized(random_state_dict("wan", seed=SEED), 8)),
    "gguf-q5": lambda: (base(), lambda _m: load_block_quantized(random_state_dict("wan", seed=SEED), 5)),
    "gguf-q4": lambda: (base(), lambda _m: load_block_quantized(random_state_dict("wan", seed=SEED), 4)),
    "riflexrope": lambda: (base(), lambda m: RifleXRoPEStandIn.apply(m, FRAMES, k=2)),
    "scalerope": lambda: (base(), lambda m: ScaleROPE.execute(m, 1.0, 0.0, 1.0, 0.0, 0.7, 1.5).result[0]),
    "nag": lambda: (base(), lambda m: WanNAGStandIn(negative()).apply(m)),
}
LOADERS = {"fp8", "gguf-q8", "gguf-q5", "gguf-q4"}   # the node is the loader itself: no node order
SAMPLING_ROWS = {
    "attention-override": lambda: (base(), lambda m: SageAttentionStandIn().apply(m)),
    "modelsamplingsd3": lambda: (base(), lambda m: ModelSamplingSD3().patch(m, 5.0)[0]),
    "cfgnorm": lambda: (base(), lambda m: CFGNorm.execute(m, 0.8).result[0]),
}
ROWS = {**MODEL_ROWS, **SAMPLING_ROWS}
CASES = [(row, order) for row in ROWS for order in (["node_first"] if row in LOADERS else ORDERS)]
# Exact to 1e-5: both runs dequantize or patch the same weights the same way (fp8 and the GGUF stand-in
# dequantize to float32 on every forward), so every row is held to the house tolerance.
TOL = 1e-5


def run(model, count, sigmas):
    latent, noise = latent_and_noise(FRAMES, SIZE)
    with PassProbe(model) as probe:
        out = sample(model, rhymeflow("euler", WARMUP, 2, 3, count=count), sigmas, latent, noise)
    return out, probe, last_report()


def dense(model, sigmas):
    latent, noise = latent_and_noise(FRAMES, SIZE)
    return sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)


# ---- (a) every frame a keyframe = ComfyUI's sampler with the same node ----------------------------------

@pytest.mark.parametrize("row,order", CASES)
def test_every_frame_a_keyframe_equals_dense_with_the_node(row, order, files):
    model, node = ROWS[row]()
    with_node = node(model)
    sigmas = sigmas_for(with_node, STEPS)
    reference = dense(with_node, sigmas)
    out, _, _ = run(ORDERS[order](node, model), FRAMES, sigmas)
    assert rel_err(out, reference) <= TOL
    if row != "attention-override":   # plain SDPA by design; its calls are counted in a test below
        assert rel_err(reference, dense(model, sigmas_for(model, STEPS))) > 1e-4, "the node changes the result"


# ---- (c) sparse keyframes: the schedule's passes all run ------------------------------------------------

@pytest.mark.parametrize("row,order", CASES)
def test_sparse_keyframes_run_every_recording_and_active_pass(row, order, files):
    model, node = ROWS[row]()
    composed = ORDERS[order](node, model)
    out, probe, report = run(composed, 2, sigmas_for(composed, STEPS))
    assert torch.isfinite(out).all() and report.completed
    assert report.model_calls == {"full": WARMUP, "record": len(SCHEDULE.groups), "active": SCHEDULE.active_passes}
    per_frame = (SIZE // 2) ** 2
    assert report.rows["active"] == SCHEDULE.active_passes * 2 * len(report.keyframes) * per_frame
    if row not in LOADERS:   # the probe's hooks sit on the base model's modules (a loader builds its own)
        assert probe.kinds(FRAMES * per_frame).count("active") == SCHEDULE.active_passes


# ---- (b) the node acts inside active passes ---------------------------------------------------------------

def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 16, FRAMES, SIZE, SIZE, generator=g), torch.full((2,), 700.0),
            torch.randn(2, 8, WAN_TEXT_DIM, generator=g) * 0.5, None)


def fresh_cache_pass(model, lowvram: bool = False):
    """(stock forward, active pass after a recording pass on the same input) of the loaded MODEL."""
    to = {k: v for k, v in model.model_options.get("transformer_options", {}).items() if k != KEY}
    to.update(cond_or_uncond=[0, 1], uuids=["cond", "uncond"])
    if lowvram:   # ComfyUI's partial loading: nothing fits, every patched layer gets a LowVramPatch
        model.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1)
    else:
        comfy.model_management.load_models_gpu([model])
    dm, args = model.model.diffusion_model, inputs()
    try:
        with torch.no_grad():
            stock = dm(*args[:3], transformer_options=dict(to))
            pass_run = RhymeFlowRun(ProjectionConfig("kv_cache"), adapter_for(model))
            for kind in (RECORD, ACTIVE):
                pass_run.set_plan(kind, KEYFRAMES)
                out = pass_run.adapter.forward(dm, pass_run, dict(to), args, {})
            pass_run.close()
        patched_layers = sum(bool(getattr(m, "weight_function", None)) for m in dm.modules())
    finally:
        if lowvram:
            model.unpatch_model()
    return stock, out, patched_layers


@pytest.mark.parametrize("row", list(MODEL_ROWS))
def test_active_pass_on_a_fresh_cache_is_the_patched_models_forward(row, files):
    model, node = MODEL_ROWS[row]()
    plain, _, _ = fresh_cache_pass(model)
    comfy.model_management.unload_all_models()
    stock, active, _ = fresh_cache_pass(node(patched(model)) if row not in LOADERS else node(model))
    assert key_err(active, stock, KEYFRAMES) <= TOL
    assert key_err(stock, plain, KEYFRAMES) > 1e-3, "the node changes the keyframe outputs"


@pytest.mark.parametrize("style,layers", [("wan", 4), ("lightx2v", 5)])   # lightx2v: + norm3's .diff
def test_low_vram_partial_loading_patches_weights_on_the_fly_in_active_passes(style, layers, files):
    # ComfyUI's lowvram path (ModelPatcher.load with a memory budget): LoRA patches applied per forward
    # through each layer's weight_function, raw parameters (Wan's modulation) patched at load.
    model = lora(style)(base())
    full_stock, full_active, _ = fresh_cache_pass(model)
    comfy.model_management.unload_all_models()
    stock, active, lowvram_layers = fresh_cache_pass(model, lowvram=True)
    assert lowvram_layers == layers, "every patched layer gets its patch on the fly (LowVramPatch)"
    assert key_err(active, stock, KEYFRAMES) <= TOL and key_err(active, full_active, KEYFRAMES) <= TOL
    assert key_err(stock, full_stock, KEYFRAMES) <= TOL


def force_partial_loading(monkeypatch):
    """ComfyUI's partial loading on a CPU: every load gets the budget the host computes when nothing fits on the
    GPU (LoadedModel.model_load's lowvram_model_memory; the host then calls ModelPatcher.partially_load)."""
    original = comfy.model_management.LoadedModel.model_load
    monkeypatch.setattr(comfy.model_management.LoadedModel, "model_load",
                        lambda self, lowvram_model_memory=0, force_patch_weights=False: original(self, 1, force_patch_weights))


@pytest.mark.parametrize("order", ORDERS)
def test_low_vram_sampling_is_exact_and_keeps_every_pass(order, files, monkeypatch):
    model, node = base(), lora("lightx2v")
    sigmas = sigmas_for(model, STEPS)
    fully_loaded = dense(node(model), sigmas)
    comfy.model_management.unload_all_models()   # a loaded model is only re-loaded partially from scratch
    force_partial_loading(monkeypatch)
    q = model.model.diffusion_model.blocks[0].self_attn.q      # a LoRA layer: patched per forward when offloaded
    seen: list = []
    handle = q.register_forward_pre_hook(lambda m, inp: seen.append((inp[0].shape[0] * inp[0].shape[1], len(m.weight_function))))
    try:
        reference = dense(node(model), sigmas)
        every, _, _ = run(ORDERS[order](node, model), FRAMES, sigmas)
        seen.clear()
        _, _, report = run(ORDERS[order](node, model), 2, sigmas)
    finally:
        handle.remove()
    assert rel_err(reference, fully_loaded) <= TOL and rel_err(every, reference) <= TOL
    assert report.model_calls == {"full": WARMUP, "record": len(SCHEDULE.groups), "active": SCHEDULE.active_passes}
    key_rows = 2 * len(report.keyframes) * (SIZE // 2) ** 2
    assert [patches for rows, patches in seen if rows == key_rows] == [1] * SCHEDULE.active_passes, "LowVramPatch in active passes"


@pytest.mark.parametrize("order", ORDERS)
def test_attention_override_runs_in_every_pass_with_keyframe_queries(order, files):
    stand_in = SageAttentionStandIn()
    composed = ORDERS[order](stand_in.apply, base())
    _, _, report = run(composed, 2, sigmas_for(composed, STEPS))
    per_pass = 2 * 2   # two blocks, self- and cross-attention (cond and uncond batched)
    by_kind = {kind: [rows for k, rows in stand_in.calls if k == kind] for kind in ("full", "record", "active")}
    assert {k: len(v) for k, v in by_kind.items()} == {k: per_pass * n for k, n in report.model_calls.items()}
    assert set(by_kind["active"]) == {2 * len(report.keyframes) * (SIZE // 2) ** 2}, "queries are keyframe rows only"
    assert set(by_kind["record"]) == {2 * FRAMES * (SIZE // 2) ** 2}


def sigmas_by_kind(model) -> dict:
    """A model-function wrapper (outside the diffusion model) that records each call's sigma by pass kind."""
    from rhymeflow_core.patch import pass_kind
    seen: dict = {}

    def record(model_function, kw):
        seen.setdefault(pass_kind(kw["c"]["transformer_options"]), []).append(float(kw["timestep"][0]))
        return model_function(kw["input"], kw["timestep"], **kw["c"])

    model.set_model_unet_function_wrapper(record)
    return seen


@pytest.mark.parametrize("order", ORDERS)
def test_model_sampling_sd3_shift_reaches_active_passes(order, files):
    # ModelSamplingSD3 shifts the sigmas (and so the timesteps the model gets); active passes run at the shifted ones.
    composed = ORDERS[order](SAMPLING_ROWS["modelsamplingsd3"]()[1], base())
    seen = sigmas_by_kind(composed)
    sigmas = sigmas_for(composed, STEPS)
    run(composed, 2, sigmas)
    active_steps = [i for i, role in enumerate(SCHEDULE.roles()) if role == "active"]
    shifted = [float(sigmas[i]) for i in active_steps]
    assert seen["active"] == pytest.approx(shifted, rel=1e-5)
    unshifted = sigmas_for(base(), STEPS)[active_steps].tolist()
    assert all(abs(a - b) > 0.01 for a, b in zip(shifted, unshifted, strict=True))   # Wan loads with shift 8


@pytest.mark.parametrize("order", ORDERS)
def test_cfgnorm_output_drives_the_keyframes_of_active_steps(order, files):
    # CFGNorm rescales the CFG result per pixel; in an active step the keyframes step on its output.
    seen: list = []

    def spy(args):   # a post-CFG function after CFGNorm's: sees its output and the branch predictions
        seen.append((args["denoised"].clone(), args["cond_denoised"], args["uncond_denoised"]))
        return args["denoised"]

    def node(m):
        m = CFGNorm.execute(m, 0.8).result[0]
        m.set_model_sampler_post_cfg_function(spy)
        return m

    composed = ORDERS[order](node, base())
    previews: list = []
    latent, noise = latent_and_noise(FRAMES, SIZE)
    sample(composed, rhymeflow("euler", WARMUP, 2, 3, count=2), sigmas_for(composed, STEPS), latent, noise,
           callback=lambda i, x0, *_: previews.append(x0.clone()))
    keys = list(last_report().keyframes)
    for i, role in enumerate(SCHEDULE.roles()):
        if role == "active":
            normed, cond, uncond = seen[i]
            plain_cfg = uncond + 5.0 * (cond - uncond)
            assert rel_err(previews[i][:, :, keys], normed[:, :, keys]) <= 1e-6
            assert rel_err(normed[:, :, keys], plain_cfg[:, :, keys]) > 1e-3


def nag_guider(model):
    guider = NAGGuiderStandIn(model)
    guider.set_conds(*conds())
    guider.set_cfg(5.0)
    return guider


def test_comfyui_nag_guider_is_refused_before_sampling(files):
    """ComfyUI-NAG's NAGCFGGuider replaces the Wan model's forward for the run, so the DIFFUSION_MODEL wrappers would
    never run (measured before the refusal: report model_calls {}, every step a full pass, no warning).
    RhymeFlow's sampler refuses it before the first step; a normal sampler on the patched MODEL still works."""
    model = base()
    sigmas = sigmas_for(model, STEPS)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    calls = []
    with pytest.raises(RhymeFlowInputError, match="replaced this WanModel's forward.*NAG.*CFGGuider"):
        sample(patched(model), rhymeflow("euler", WARMUP, 2, 3, count=2), sigmas, latent, noise, guider=nag_guider(patched(model)),
               callback=lambda *a: calls.append(a))
    assert calls == []
    plain = sample(patched(model), comfy.samplers.sampler_object("euler"), sigmas, latent, noise, guider=nag_guider(patched(model)))
    reference = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, guider=nag_guider(model))
    assert rel_err(plain, reference) <= TOL
