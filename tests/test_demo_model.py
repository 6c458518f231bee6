"""The embedded demo model: exact latent space, deterministic prompts, loads in ComfyUI, follows prompts."""
import comfy.sample
import comfy.samplers
import numpy as np
import pytest
import torch

from rhymeflow_core.demo_model import WEIGHTS, decode_latent, encode_latent, encode_prompt, load_demo_model
from tools.demo_clips import BACKGROUND, COLOURS, parse_prompt, random_prompt, render


def test_latent_space_is_exact_and_matches_comfyui_latent_format():
    rng = np.random.default_rng(0)
    video = torch.from_numpy(np.stack([render(random_prompt(rng), rng) for _ in range(2)]))
    latent = encode_latent(video)
    assert latent.shape == (2, 16, 13, 16, 16)
    assert torch.allclose(decode_latent(latent), video, atol=1e-5)


def test_prompt_encoder_is_deterministic_and_binds_words_to_shapes():
    a = encode_prompt("a red circle moves right and a blue square falls")
    assert a.shape == (1, 32, 4096) and torch.equal(a, encode_prompt("A red circle moves right and a blue square falls"))
    swapped = encode_prompt("a blue circle moves right and a red square falls")
    assert not torch.allclose(a, swapped)
    assert torch.count_nonzero(encode_prompt("")) == 0, "the empty prompt is the unconditional input"
    assert torch.equal(encode_prompt("an orange circle stays"), encode_prompt("a orange circle stays"))


def test_clip_grammar_rejects_unknown_words():
    assert parse_prompt("a red circle moves right; then a blue square falls")[1][0] == "cut"
    with pytest.raises(ValueError, match="colour"):
        parse_prompt("a purple circle moves right")


def test_loads_through_comfyui_unet_loader(monkeypatch):
    import folder_paths
    import nodes
    folder_paths.add_model_folder_path("diffusion_models", str(WEIGHTS.parent))
    assert WEIGHTS.name in folder_paths.get_filename_list("diffusion_models")
    model = nodes.UNETLoader().load_unet(WEIGHTS.name, "default")[0]
    assert type(model.model.diffusion_model).__name__ == "WanModel"
    assert model.model.diffusion_model.dim == 256


def _generate(prompt: str, seed: int, steps: int = 16):
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    model = ModelSamplingSD3().patch(_model(), 3.0)[0]
    latent = torch.zeros(1, 16, 13, 16, 16)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds([[encode_prompt(prompt), {}]], [[encode_prompt(""), {}]])
    guider.set_cfg(4.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).float()
    with torch.no_grad():
        out = guider.sample(comfy.sample.prepare_noise(latent, seed), latent, comfy.samplers.sampler_object("uni_pc"),
                            sigmas, disable_pbar=True, seed=seed)
    return decode_latent(out)[0]


_CACHE = {}


def _model():
    if "m" not in _CACHE:
        _CACHE["m"] = load_demo_model()
    return _CACHE["m"]


def _object_track(video: torch.Tensor):
    """Per frame: foreground mask (far from the background colour), its mean colour and centroid."""
    bg = torch.tensor(BACKGROUND)
    fg = (video - bg).abs().max(dim=-1).values > 0.3
    ys, xs = torch.meshgrid(torch.arange(video.shape[1]), torch.arange(video.shape[2]), indexing="ij")
    colour = (video * fg[..., None]).sum(dim=(0, 1, 2)) / fg.sum().clamp_min(1)
    cx = torch.stack([(xs * f).sum() / f.sum().clamp_min(1) for f in fg])
    cy = torch.stack([(ys * f).sum() / f.sum().clamp_min(1) for f in fg])
    return fg, colour, cx, cy


CASES = [
    ("a red circle moves right", "red", "x", 1),
    ("a blue square moves left", "blue", "x", -1),
    ("a yellow circle falls", "yellow", "y", 1),
    ("a green triangle moves up", "green", "y", -1),
]
_VIDEOS = {}


def _video(prompt, seed):
    if (prompt, seed) not in _VIDEOS:
        _VIDEOS[prompt, seed] = _generate(prompt, seed)
    return _VIDEOS[prompt, seed]


@pytest.mark.parametrize("prompt,colour,axis,sign", CASES)
def test_generated_object_has_the_prompted_colour(prompt, colour, axis, sign):
    for seed in (1, 2):
        fg, mean_colour, _, _ = _object_track(_video(prompt, seed))
        assert (fg.flatten(1).sum(1) >= 4).sum() >= 5, f"{prompt!r} seed {seed}: no object visible in most frames"
        nearest = min(COLOURS, key=lambda c: float((torch.tensor(COLOURS[c]) - mean_colour).norm()))
        assert nearest == colour, f"{prompt!r} seed {seed}: object colour {mean_colour.tolist()} is nearest {nearest}"


@pytest.mark.xfail(reason="the CPU-trained demo model (4,600 steps) does not yet move objects reliably as prompted; "
                          "see docs/demo_model.md", strict=False)
@pytest.mark.parametrize("prompt,colour,axis,sign", CASES)
def test_generated_object_moves_as_prompted(prompt, colour, axis, sign):
    for seed in (1, 2):
        fg, _, cx, cy = _object_track(_video(prompt, seed))
        visible = fg.flatten(1).sum(1) >= 4
        track = (cx if axis == "x" else cy)[visible]
        assert sign * float(track[-1] - track[0]) > 3, f"{prompt!r} seed {seed}: {axis} track {track.tolist()}"
