"""Keyframe detection (docs/algorithm.md §3): the semantic scan, the budget rules and the other strategies."""
import pytest
import torch

from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.keyframes import KeyframeSpec, parse_manual_frames, select_keyframes


def clip(changes_at=(), frames=13, seed=0, drift=0.0):
    """A clean-prediction latent whose content switches to a new random scene at each index in `changes_at`."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.randn(16, 8, 8, generator=g)
    out = []
    for f in range(frames):
        if f in changes_at:
            scene = torch.randn(16, 8, 8, generator=g)
        out.append(scene + drift * f * torch.randn(16, 8, 8, generator=g))
    return torch.stack(out, dim=1)[None]


def test_semantic_picks_a_planted_scene_cut():
    assert select_keyframes(clip(changes_at=(6,)), KeyframeSpec("semantic", 3)) == [0, 6, 12]


def test_semantic_keeps_the_strongest_cuts_when_over_budget():
    x = clip(changes_at=(3, 6, 9))
    x[:, :, 6:9] = 0.7 * x[:, :, 6:9] + 0.3 * x[:, :, 5:6]  # the cut at 6 is the weakest
    assert select_keyframes(x, KeyframeSpec("semantic", 4)) == [0, 3, 9, 12]


def test_semantic_fills_by_transition_score_when_under_budget():
    x = clip(changes_at=(), drift=0.02)
    picks = select_keyframes(x, KeyframeSpec("semantic", 5))
    assert len(picks) == 5 and picks[0] == 0 and picks[-1] == 12


def test_gap_filling_when_scores_cannot_fill():
    # min_gap 4 over 13 frames: score picks cannot reach 6, so the largest gaps get split.
    picks = select_keyframes(clip(drift=0.01), KeyframeSpec("semantic", 6, min_gap=4))
    assert len(picks) == 6 and picks[0] == 0 and picks[-1] == 12


def test_release_default_is_first_and_last():
    assert select_keyframes(clip(changes_at=(4, 8)), KeyframeSpec()) == [0, 12]


def test_budget_at_least_frames_gives_all_and_one_gives_boundaries():
    assert select_keyframes(clip(frames=5), KeyframeSpec("semantic", 5)) == [0, 1, 2, 3, 4]
    assert select_keyframes(clip(frames=5), KeyframeSpec("uniform", 1)) == [0, 4]


def test_uniform_and_first_and_random_add_boundaries():
    x = clip(frames=21)
    assert select_keyframes(x, KeyframeSpec("uniform", 5)) == [0, 5, 10, 15, 20]
    assert select_keyframes(x, KeyframeSpec("first", 3)) == [0, 1, 2, 20]
    rnd = select_keyframes(x, KeyframeSpec("random", 3, seed=4))
    assert {0, 20} <= set(rnd) and 3 <= len(rnd) <= 5


def test_manual_frames_parse_and_negative_index():
    assert parse_manual_frames(" 0, 7 ,20 ") == (0, 7, 20)
    assert select_keyframes(clip(frames=21), KeyframeSpec("manual", manual=(7, -1))) == [0, 7, 20]


@pytest.mark.parametrize("text", ["0,a,3", "1.5", "0;x"])
def test_malformed_manual_frames_are_refused(text):
    with pytest.raises(RhymeFlowInputError, match="manual keyframes .* not a frame number"):
        parse_manual_frames(text)


def test_manual_frame_out_of_range_names_the_valid_range():
    with pytest.raises(RhymeFlowInputError, match=r"out of range .* 13 latent frames \(valid: 0..12"):
        KeyframeSpec("manual", manual=(0, 13)).check_frames(13)


def test_more_keyframes_than_frames_is_refused():
    with pytest.raises(RhymeFlowInputError, match="only 5 latent frames"):
        KeyframeSpec("semantic", 6).check_frames(5)
