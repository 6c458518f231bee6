"""The embedded demo model: exact latent space, deterministic prompts, loads in ComfyUI, follows prompts."""
import functools
import hashlib

import numpy as np
import pytest
import torch

from rhymeflow_core.demo_model import WEIGHTS, decode_latent, encode_latent, encode_prompt
from rhymeflow_core.demo_prompt import grammar_help, parse_prompt
from tools.demo_clips import COLOURS, random_prompt, render
from tools.demo_motion import CASES as MOTION_CASES
from tools.demo_motion import MIN_PIXELS, displacement, object_track


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


# sha256 (first 16 hex digits) of encode_prompt(prompt) as float32 bytes, computed with the encoder the shipped
# weights were trained with (before the grammar moved to rhymeflow_core/demo_prompt.py): they must never change.
TRAINED_EMBEDDINGS = {
    "": "07854d2fef297a06",
    "a red circle moves right": "ffc71e094054adf3",
    "A red circle moves right and a blue square falls": "6a3a8edc83eb235f",
    "an orange triangle bounces; then a white square stays": "ee115caa9d820ecd",
    "a cyan circle moves up; fade to a magenta square moves down and a yellow triangle falls": "cef3ef2ee3dc2181",
    "a green square moves left and a red circle moves up and a blue triangle bounces; then a yellow circle stays; "
    "fade to a white square falls": "16da0dd506d9179c",
    "a red circle moves right and a blue square moves left and a green triangle moves up; then a white circle moves "
    "down and a cyan square bounces; fade to an orange triangle stays": "3d2abeafd6cc50b5",   # 34 tokens, cut to 32
    "a purple hexagon spins, 3 times!": "be97b64a85c95b93",   # outside the grammar: still encoded
    "  ;; a RED circle ; then  ": "c8e5d6a078a68ffb",
}


@pytest.mark.parametrize("prompt", list(TRAINED_EMBEDDINGS))
def test_prompt_embeddings_are_the_ones_the_weights_were_trained_on(prompt):
    embedding = encode_prompt(prompt)
    assert embedding.dtype == torch.float32 and embedding.shape == (1, 32, 4096)
    assert hashlib.sha256(embedding.numpy().tobytes()).hexdigest()[:16] == TRAINED_EMBEDDINGS[prompt]


def test_prompt_node_tooltip_lists_the_vocabulary():
    from rhymeflow_core.demo_prompt import COLOURS as WORDS
    from rhymeflow_core.demo_prompt import KINDS
    text = grammar_help()
    assert all(word in text for word in (*WORDS, *KINDS, "moves left/right/up/down", "falls", "bounces", "stays"))
    assert set(COLOURS) == set(WORDS), "the clips render every colour word"


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


@functools.cache
def _harness():
    from tools.fidelity import Harness
    from tools.fidelity_profiles import PROFILES
    return Harness(PROFILES["demo"])   # shift 3, cfg 4: the motion tool's settings


@functools.cache
def _video(prompt, seed):
    """Dense sampling as the motion tool does it (uni_pc 16 steps, cfg 4, shift 3), memoised."""
    return _harness().dense(prompt, seed, 16)


# the motion tool's first four prompts, with the colour word: (prompt, colour, axis, sign)
CASES = [(prompt, prompt.split()[1], axis, sign) for prompt, axis, sign in MOTION_CASES[:4]]


@pytest.mark.slow
@pytest.mark.parametrize("prompt,colour,axis,sign", CASES)
def test_generated_object_has_the_prompted_colour(prompt, colour, axis, sign):
    for seed in (1, 2):
        fg, mean_colour, _, _ = object_track(_video(prompt, seed))
        assert (fg.flatten(1).sum(1) >= MIN_PIXELS).sum() >= 5, f"{prompt!r} seed {seed}: no object visible in most frames"
        nearest = min(COLOURS, key=lambda c: float((torch.tensor(COLOURS[c]) - mean_colour).norm()))
        assert nearest == colour, f"{prompt!r} seed {seed}: object colour {mean_colour.tolist()} is nearest {nearest}"


@pytest.mark.slow
@pytest.mark.xfail(raises=AssertionError, strict=True,
                   reason="the CPU-trained demo model (4,600 steps) does not yet move objects as prompted: about half the samples "
                          "move the prompted way, as chance would (docs/demo_model.md; tools/demo_motion.py measures it)")
def test_generated_object_moves_as_prompted():
    """All eight samples (four prompts x seeds 1, 2) move more than 3 px the prompted way. Strict: when the model
    learns motion this passes, and the xfail must go (a single prompt's two seeds often pass by chance)."""
    moved = {(prompt, seed): displacement(_video(prompt, seed), axis, sign) for prompt, _, axis, sign in CASES for seed in (1, 2)}
    wrong = {f"{prompt!r} seed {seed}": round(d, 1) for (prompt, seed), d in moved.items() if not d > 3}
    assert not wrong, f"moved (px, prompted direction) no more than 3 px: {wrong}"


@pytest.mark.slow
def test_motion_tool_runs_end_to_end(tmp_path):
    """tools/demo_motion.py (the numbers in docs/demo_model.md): every prompt sampled, the word gap measured."""
    import json

    from tools import demo_motion
    demo_motion.main(["--seeds", "1", "--json", str(tmp_path / "motion.json")])
    result = json.loads((tmp_path / "motion.json").read_text())
    assert [row["prompt"] for row in result["rows"]] == [case[0] for case in MOTION_CASES]
    assert result["total"] == len(MOTION_CASES) and 0 <= result["ok"] <= result["total"]
    assert set(result["word_gap"]) == {"0.5", "0.95"} and all(g >= 0 for g in result["word_gap"].values())
